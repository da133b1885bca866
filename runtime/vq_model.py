"""A loaded VQ-VAE or VQ-VAE + prior: `sample()` draws a code grid with the prior, then decodes it.

From a checkpoint: "torch" runs its modules (the prior with a growing key/value cache);
"onnxruntime" and "openvino" export the VQ decoder and the prior's step graph in memory
(latentforge.export.vq, parity-checked) and run them. From exported files: the VQ decoder
`.onnx` alone (decode_codes), or the prior `.onnx` with `decoder=` its VQ decoder, on
onnxruntime or OpenVINO. The sampling loop is NumPy with a seeded PCG64 everywhere, so a seed
gives the same codes and the same image on every backend.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from latentforge.checkpoint import PREFIX as META
from latentforge.errors import CheckpointError, InputError
from latentforge.images import from_uint8, to_uint8

from .artifact import image_shape_of
from .vq_sampling import StepLogits, sample_chunks

CHUNK = 256   # images a sampling run draws at once: the key/value cache is ~1 MiB an image at a 16x16 grid
STEP_IO = (["token", "position", "cache"], ["logits", "kv"])


class VQModel:
    point_dim = 0   # image models only

    def __init__(self, path: Path, kind: str, backend: str, facts: dict, decode, logits=None, encode=None,
                 threads: int = 1, precision: str = "fp32", no_prior: str = ""):
        """`facts`: image_shape (H, W, C), value_range, codebook_size, code_grid (a side). `logits()` gives a fresh
        tokens -> logits function for one sampling run (it may keep state, e.g. a key/value cache). `no_prior`: what
        `sample` says when there is no prior."""
        self.path, self.kind, self.backend, self.threads, self.precision = Path(path), kind, backend, threads, precision
        self.image_shape = tuple(facts["image_shape"])
        self.value_range = tuple(facts["value_range"])
        self.codebook_size = int(facts["codebook_size"])
        self.code_grid = int(facts["code_grid"])
        self.attributes: dict[str, np.ndarray] = {}
        self._decode, self._logits, self._encode, self._no_prior = decode, logits, encode, no_prior

    # A VQ model has code grids where a VAE has latent vectors: say so instead of an AttributeError.
    def _no_latent(self, what: str):
        raise InputError(f"{str(self.path)!r} is a VQ model: it has code grids, not latent vectors, so it cannot "
                         f"{what}; use sample(), sample_codes() and decode_codes()")

    @property
    def latent_dim(self):
        self._no_latent("take latents")

    @property
    def has_encoder(self) -> bool:
        return self._encode is not None

    def decode(self, z):
        self._no_latent("decode latents")

    def edit(self, *args, **kwargs):
        self._no_latent("be edited along attribute directions")

    def filter_graph(self):
        self._no_latent("run as a latent-edit filter")

    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0, top_k: int | None = None) -> np.ndarray:
        """n images uint8 [n, H, W, C]: codes drawn by the prior (temperature, top-k), then decoded."""
        return self.decode_codes(self.sample_codes(n, seed, temperature, top_k))

    def sample_codes(self, n: int, seed: int | None = None, temperature: float = 1.0,
                     top_k: int | None = None) -> np.ndarray:
        """n code grids int64 [n, h, w], drawn CHUNK images at a time (vq_sampling.sample_chunks)."""
        if self._logits is None:
            raise InputError(self._no_prior)
        return sample_chunks(self._logits, n, self.code_grid, self.codebook_size, seed, temperature, top_k, CHUNK)

    def decode_codes(self, codes) -> np.ndarray:
        """Code grids int [N, h, w] -> uint8 [N, H, W, C]."""
        codes = np.asarray(codes)
        g = self.code_grid
        if codes.dtype.kind not in "iu" or codes.ndim != 3 or codes.shape[1:] != (g, g) or len(codes) == 0:
            raise InputError(f"codes must be integers of shape [N, {g}, {g}] with N >= 1, "
                             f"got {codes.dtype} {list(codes.shape)}")
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise InputError(f"codes must be in 0..{self.codebook_size - 1}, got {codes.min()}..{codes.max()}")
        codes = codes.astype(np.int64)
        return np.concatenate([to_uint8(self._decode(codes[i:i + CHUNK]), self.value_range)
                               for i in range(0, len(codes), CHUNK)])

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
                f"code_grid={self.code_grid}, backend={self.backend!r}, precision={self.precision!r}, "
                f"path={str(self.path)!r})")


def _on_graphs(path: Path, kind: str, backend: str, facts: dict, decoder, prior, cache_shape, encode=None,
               no_prior: str = "") -> VQModel:
    """A VQModel over opened graphs (OrtGraph/OvGraph: `.run(feeds)` -> outputs in order); `prior` may be None."""
    def decode(codes: np.ndarray) -> np.ndarray:
        return decoder.run({"codes": codes})[0]

    def run_step(token, position, cache):
        return prior.run({"token": token, "position": position, "cache": cache})

    def logits():
        return StepLogits(run_step, cache_shape)

    return VQModel(path, kind, backend, facts, decode, logits if prior is not None else None, encode,
                   decoder.threads, decoder.precision, no_prior)


def load_vq(path: Path, backend: str, threads: int | None, precision: str = "fp32") -> VQModel:
    """A vqvae or prior checkpoint on torch, or (its graphs exported in memory) on onnxruntime or OpenVINO."""
    import torch

    from latentforge.checkpoint import load_checkpoint

    from .torch_backend import thread_count

    if precision != "fp32":
        raise InputError(f"a VQ checkpoint runs at fp32; for {precision} export the parts with `latentforge export "
                         f"{path} --part prior|decoder --dtype {precision}` and load the .onnx files")
    module, info = load_checkpoint(path)
    vqvae = module.vqvae if info.kind == "prior" else module
    vq = info.config["vqvae"] if info.kind == "prior" else info.config
    facts = {"image_shape": (vq["image_size"], vq["image_size"], vq["channels"]), "value_range": info.value_range,
             "codebook_size": vq["codebook_size"], "code_grid": vq["image_size"] >> vq["downsample"]}
    no_prior = (f"{str(path)!r} is a VQ-VAE without a prior, so it cannot sample; train one with "
                f"`latentforge train prior {path}` and load that checkpoint")

    def encode(x: np.ndarray) -> np.ndarray:
        with thread_count(threads), torch.inference_mode():
            return vqvae.encode(torch.from_numpy(x)).numpy()

    if backend in ("onnxruntime", "openvino"):
        from latentforge.export.vq import vq_graphs
        from latentforge.models.prior import PriorStep

        from .model import open_graph

        graphs = {part: open_graph(backend, data, threads, f"the {part} graph of {str(path)!r}")
                  for part, data in vq_graphs(module, info).items()}
        cache_shape = tuple(PriorStep(module.transformer).empty_cache(1).shape[1:]) if info.kind == "prior" else ()
        return _on_graphs(path, info.kind, backend, facts, graphs["decoder"], graphs.get("prior"), cache_shape,
                          encode, no_prior)

    def decode(codes: np.ndarray) -> np.ndarray:
        with thread_count(threads), torch.inference_mode():
            return vqvae.decode(torch.from_numpy(codes)).numpy()

    def logits():
        from latentforge.models.prior import CachedLogits

        cached = CachedLogits.numpy(module.transformer)

        def run(tokens: np.ndarray) -> np.ndarray:
            with thread_count(threads):
                return cached(tokens)

        return run

    return VQModel(path, info.kind, "torch", facts, decode, logits if info.kind == "prior" else None, encode,
                   threads or torch.get_num_threads(), no_prior=no_prior)


def _graph_facts(meta: dict[str, str], path: Path) -> dict:
    """The VQ facts an exported graph's metadata_props carry (latentforge.export.vq.vq_metadata)."""
    try:
        grid = [int(v) for v in json.loads(meta[META + "code_grid"])]
        facts = {"image_shape": image_shape_of(meta), "codebook_size": int(meta[META + "codebook_size"]),
                 "value_range": tuple(float(v) for v in json.loads(meta[META + "value_range"])), "code_grid": grid[0]}
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"{str(path)!r} has missing or malformed latentforge VQ metadata ({e}); "
                              "re-export it with `latentforge export`") from None
    return facts


def load_vq_graphs(path: Path, graph, backend: str, decoder_path: Path | None, open_decoder) -> VQModel:
    """An exported VQ decoder (`codes` -> `image`), or a prior's step graph ((token, position, cache) -> (logits,
    kv)) with its decoder beside it.

    `graph` is the opened `path`; `open_decoder(decoder_path)` opens the decoder graph on the same backend and
    precision. A prior and a decoder exported from different VQ-VAEs are refused (their vqvae_sha256 differ).
    """
    meta, part = graph.metadata, graph.metadata.get(META + "part")
    facts = _graph_facts(meta, path)
    cache_shape = ()
    if part == "vq_decoder":
        if decoder_path is not None:
            raise InputError(f"{str(path)!r} is itself a VQ decoder; `decoder=` goes with a prior graph")
        decoder, prior = graph, None
    else:
        if decoder_path is None:
            raise InputError(f"{str(path)!r} is a code prior, which draws codes but not images: also give its VQ "
                             "decoder, `load(PRIOR_ONNX, decoder=DECODER_ONNX)` (`latentforge sample PRIOR_ONNX "
                             "--decoder DECODER_ONNX`), made by `latentforge export PRIOR_CKPT --part decoder`")
        decoder, prior = open_decoder(decoder_path), graph
        dmeta = decoder.metadata
        if dmeta.get(META + "part") != "vq_decoder":
            raise InputError(f"decoder {str(decoder_path)!r} is not a VQ decoder graph (latentforge.part="
                             f"{dmeta.get(META + 'part')!r}); export one with `--part decoder` from the prior "
                             "checkpoint")
        ours, theirs = meta.get(META + "vqvae_sha256"), dmeta.get(META + "vqvae_sha256")
        if _graph_facts(dmeta, decoder_path) != facts or ours != theirs:
            raise CheckpointError(f"prior {str(path)!r} and decoder {str(decoder_path)!r} do not come from the same "
                                  "VQ-VAE (their latentforge.vqvae_sha256 differ); export both from one prior "
                                  "checkpoint with this version of latentforge")
        if (prior.input_names, prior.output_names) != STEP_IO:
            raise CheckpointError(f"{str(path)!r} has inputs {prior.input_names} and outputs {prior.output_names}, "
                                  f"expected {STEP_IO[0]} -> {STEP_IO[1]}; re-export it with `latentforge export`")
        try:
            cache_shape = tuple(int(v) for v in json.loads(meta[META + "prior_cache"]))
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{str(path)!r} lacks a usable latentforge.prior_cache ({e}); re-export it with "
                                  "`latentforge export`") from None
    if decoder.input_names != ["codes"] or decoder.output_names != ["image"]:
        raise CheckpointError(f"the VQ decoder has inputs {decoder.input_names} and outputs {decoder.output_names}, "
                              "expected ['codes'] -> ['image']; re-export it with `latentforge export`")
    no_prior = (f"{str(path)!r} is a VQ decoder: it decodes code grids (decode_codes) but draws none; to sample, "
                "load the prior graph with it, `load(PRIOR_ONNX, decoder=...)`")
    return _on_graphs(path, "prior" if prior is not None else "vqvae", backend, facts, decoder, prior, cache_shape,
                      no_prior=no_prior)
