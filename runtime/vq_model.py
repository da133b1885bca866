"""A loaded VQ-VAE or VQ-VAE + prior: `sample()` draws a code grid with the prior, then decodes it.

Backends: "torch" runs the checkpoint's modules; "onnxruntime" exports the decoder and the
prior in memory (latentforge.export.vq, parity-checked) and runs them in sessions. The
sampling loop is NumPy with a seeded PCG64 either way, so a seed gives the same codes and the
same image on both.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from latentforge.errors import InputError
from latentforge.images import from_uint8, to_uint8

from .vq_sampling import StepLogits, sample_codes


class VQModel:
    def __init__(self, path: Path, kind: str, backend: str, facts: dict, decode, logits=None, encode=None,
                 threads: int = 1, precision: str = "fp32"):
        """`facts`: image_shape (H, W, C), value_range, codebook_size, code_grid (a side). `logits()` gives a fresh
        tokens -> logits function for one sampling run (it may keep state, e.g. a key/value cache)."""
        self.path, self.kind, self.backend, self.threads, self.precision = Path(path), kind, backend, threads, precision
        self.image_shape = tuple(facts["image_shape"])
        self.value_range = tuple(facts["value_range"])
        self.codebook_size = int(facts["codebook_size"])
        self.code_grid = int(facts["code_grid"])
        self.attributes: dict[str, np.ndarray] = {}
        self._decode, self._logits, self._encode = decode, logits, encode

    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0, top_k: int | None = None) -> np.ndarray:
        """n images uint8 [n, H, W, C]: codes drawn by the prior (temperature, top-k), then decoded."""
        if self._logits is None:
            raise InputError(f"{str(self.path)!r} is a VQ-VAE without a prior, so it cannot sample; train one with "
                             f"`latentforge train prior {self.path}` and load that checkpoint")
        return self.decode_codes(self.sample_codes(n, seed, temperature, top_k))

    def sample_codes(self, n: int, seed: int | None = None, temperature: float = 1.0,
                     top_k: int | None = None) -> np.ndarray:
        return sample_codes(self._logits(), n, self.code_grid, self.codebook_size, seed, temperature, top_k)

    def decode_codes(self, codes) -> np.ndarray:
        """Code grids int [N, h, w] -> uint8 [N, H, W, C]."""
        codes = np.asarray(codes)
        g = self.code_grid
        if codes.dtype.kind not in "iu" or codes.ndim != 3 or codes.shape[1:] != (g, g) or len(codes) == 0:
            raise InputError(f"codes must be integers of shape [N, {g}, {g}] with N >= 1, "
                             f"got {codes.dtype} {list(codes.shape)}")
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise InputError(f"codes must be in 0..{self.codebook_size - 1}, got {codes.min()}..{codes.max()}")
        return to_uint8(self._decode(codes.astype(np.int64)), self.value_range)

    def encode(self, images) -> np.ndarray:
        """uint8 [N, H, W, C] -> code grids int64 [N, h, w] (torch; checkpoints only)."""
        if self._encode is None:
            raise InputError(f"{str(self.path)!r} is an exported graph without the VQ encoder; encode with the "
                             "checkpoint, `latentforge.load(VQ_CKPT).encode(images)`")
        arr = np.asarray(images)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != self.image_shape or not len(arr):
            raise InputError(f"images must be uint8 [N, {', '.join(map(str, self.image_shape))}] with N >= 1, "
                             f"got {arr.dtype} {list(arr.shape)}")
        return self._encode(from_uint8(arr, self.value_range))

    def __repr__(self) -> str:
        return (f"VQModel(kind={self.kind!r}, image_shape={self.image_shape}, codebook_size={self.codebook_size}, "
                f"code_grid={self.code_grid}, backend={self.backend!r}, path={str(self.path)!r})")


def load_vq(path: Path, backend: str, threads: int | None) -> VQModel:
    import torch

    from latentforge.checkpoint import load_checkpoint

    from .torch_backend import thread_count

    module, info = load_checkpoint(path)
    vqvae = module.vqvae if info.kind == "prior" else module

    def encode(x: np.ndarray) -> np.ndarray:
        with thread_count(threads), torch.inference_mode():
            return vqvae.encode(torch.from_numpy(x)).numpy()

    if backend == "onnxruntime":
        from latentforge.export.vq import vq_graphs
        from latentforge.models.prior import PriorStep

        from .ort_backend import open_session, session_options

        graphs = vq_graphs(module, info)
        sessions = {part: open_session(g, session_options(threads), f"the {part} graph of {str(path)!r}")
                    for part, g in graphs.items()}

        def decode(codes: np.ndarray) -> np.ndarray:
            return sessions["decoder"].run(["image"], {"codes": codes})[0]

        def run_step(token, position, cache):
            return sessions["prior"].run(["logits", "kv"], {"token": token, "position": position, "cache": cache})

        cache_shape = tuple(PriorStep(module.transformer).empty_cache(1).shape[1:]) if info.kind == "prior" else ()

        def logits():
            return StepLogits(run_step, cache_shape)
    else:
        def decode(codes: np.ndarray) -> np.ndarray:
            with thread_count(threads), torch.inference_mode():
                return vqvae.decode(torch.from_numpy(codes)).numpy()

        def logits():
            from latentforge.models.prior import CachedLogits

            cached = CachedLogits(module.transformer)

            def run(tokens: np.ndarray) -> np.ndarray:
                with thread_count(threads), torch.inference_mode():
                    return cached(torch.from_numpy(tokens)).numpy()

            return run

    prior = logits if info.kind == "prior" else None
    vq = info.config["vqvae"] if info.kind == "prior" else info.config
    facts = {"image_shape": (vq["image_size"], vq["image_size"], vq["channels"]), "value_range": info.value_range,
             "codebook_size": vq["codebook_size"], "code_grid": vq["image_size"] >> vq["downsample"]}
    return VQModel(path, info.kind, "onnxruntime" if backend == "onnxruntime" else "torch", facts, decode, prior,
                   encode, threads or torch.get_num_threads())


def _graph_facts(meta: dict[str, str], path: Path) -> dict:
    """The VQ facts an exported graph's metadata_props carry (latentforge.export.vq.vq_metadata)."""
    from latentforge.checkpoint import PREFIX as META
    from latentforge.errors import CheckpointError

    try:
        channels, height, width = (int(v) for v in json.loads(meta[META + "image_shape"]))
        grid = [int(v) for v in json.loads(meta[META + "code_grid"])]
        facts = {"image_shape": (height, width, channels), "codebook_size": int(meta[META + "codebook_size"]),
                 "value_range": tuple(float(v) for v in json.loads(meta[META + "value_range"])), "code_grid": grid[0]}
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"{str(path)!r} has missing or malformed latentforge VQ metadata ({e}); "
                              "re-export it with `latentforge export`") from None
    return facts


def load_vq_graphs(path: Path, graph, backend: str, decoder_path: Path | None, open_decoder,
                   threads: int | None) -> VQModel:
    """An exported VQ decoder (`codes` -> `image`), or a prior (`tokens` -> `logits`) with its decoder beside it.

    `graph` is the opened `path`; `open_decoder(decoder_path)` opens the decoder graph on the same backend and
    precision. A prior and a decoder exported from different VQ-VAEs are refused (their vqvae_sha256 differ).
    """
    from latentforge.checkpoint import PREFIX as META
    from latentforge.errors import CheckpointError

    meta, part = graph.metadata, graph.metadata.get(META + "part")
    facts = _graph_facts(meta, path)
    if part == "vq_decoder":
        if decoder_path is not None:
            raise InputError(f"{str(path)!r} is itself a VQ decoder; `decoder=` goes with a prior graph")
        decoder, prior = graph, None
    else:
        if decoder_path is None:
            raise InputError(f"{str(path)!r} is a code prior, which draws codes but cannot draw them as images: "
                             "also give its VQ decoder, `load(PRIOR_ONNX, decoder=DECODER_ONNX)` (CLI: --decoder), "
                             "made by `latentforge export PRIOR_CKPT --part decoder -o DECODER_ONNX`")
        decoder, prior = open_decoder(decoder_path), graph
        dmeta = decoder.metadata
        if dmeta.get(META + "part") != "vq_decoder":
            raise InputError(f"decoder {str(decoder_path)!r} is not a VQ decoder graph (latentforge.part="
                             f"{dmeta.get(META + 'part')!r}); export one with `--part decoder` from the prior checkpoint")
        mine = _graph_facts(dmeta, decoder_path)
        ours, theirs = meta.get(META + "vqvae_sha256"), dmeta.get(META + "vqvae_sha256")
        if mine != facts or (ours and theirs and ours != theirs):
            raise CheckpointError(f"prior {str(path)!r} and decoder {str(decoder_path)!r} come from different "
                                  "VQ-VAEs; export both from the same prior checkpoint")
    if decoder.input_names != ["codes"] or decoder.output_names != ["image"]:
        raise CheckpointError(f"the VQ decoder has inputs {decoder.input_names} and outputs {decoder.output_names}, "
                              "expected ['codes'] -> ['image']; re-export it with `latentforge export`")
    step_io = (["token", "position", "cache"], ["logits", "kv"])
    if prior is not None and (prior.input_names, prior.output_names) != step_io:
        raise CheckpointError(f"{str(path)!r} has inputs {prior.input_names} and outputs {prior.output_names}, "
                              f"expected {step_io[0]} -> {step_io[1]}; re-export it with `latentforge export`")
    if prior is not None:
        try:
            cache_shape = tuple(int(v) for v in json.loads(meta[META + "prior_cache"]))
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{str(path)!r} lacks a usable latentforge.prior_cache ({e}); re-export it with "
                                  "`latentforge export`") from None

    def decode(codes: np.ndarray) -> np.ndarray:
        return decoder.run({"codes": codes})[0]

    def run_step(token, position, cache):
        return prior.run({"token": token, "position": position, "cache": cache})

    def logits():
        return StepLogits(run_step, cache_shape)

    return VQModel(path, "prior" if prior is not None else "vqvae", backend, facts, decode,
                   logits if prior is not None else None, None, threads or 1, precision=graph.precision)
