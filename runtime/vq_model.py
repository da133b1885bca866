"""A loaded VQ-VAE or VQ-VAE + prior: `sample()` draws a code grid with the prior, then decodes it.

Built by runtime/loading.py: over a checkpoint's modules on torch (the prior with a growing key/value
cache), or over graphs (`on_graphs`): the VQ decoder and the prior's step graph, exported in memory
from a checkpoint or loaded from the exporter's `.onnx` files. The sampling loop is NumPy with a
seeded PCG64 everywhere, so a seed gives the same codes and the same image on every backend.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from latentforge.errors import InputError
from latentforge.images import from_uint8, to_uint8

from .nan_guard import GuardedLogits, NanGuard, graph_at, nonfinite_rows
from .protocols import BackendGraph
from .vq_sampling import StepLogits, sample_chunks

CHUNK = 256   # images a sampling run draws at once: the key/value cache is ~1 MiB an image at a 16x16 grid


class VQModel:
    point_dim = 0   # images, not points
    chosen_because = ""  # set by `load`
    codec_points: tuple[int, ...] = ()   # set by `load` for a prior checkpoint, with codec_factory(point)

    def __init__(self, path: Path, kind: str, backend: str, facts: dict, decode, logits=None, encode=None,
                 threads: int = 1, precision: str = "fp32", no_prior: str = "", decode_at=None, logits_at=None,
                 prior_precision: str = "fp32"):
        """`facts`: image_shape (H, W, C), value_range, codebook_size, code_grid (a side). `logits()` gives a fresh
        tokens -> logits function for one sampling run (it may keep state, e.g. a key/value cache). `no_prior`: what
        `sample` says when there is no prior. `decode_at(precision)`: the decode at a higher precision, or None
        (the NaN guard's ladder, runtime/nan_guard.py); `logits_at(precision)` likewise a fresh `logits()` of the
        prior, which runs at `prior_precision`."""
        self.path, self.kind, self.backend, self.threads, self.precision = Path(path), kind, backend, threads, precision
        self.image_shape = tuple(facts["image_shape"])
        self.value_range = tuple(facts["value_range"])
        self.codebook_size = int(facts["codebook_size"])
        self.code_grid = int(facts["code_grid"])
        self.attributes: dict[str, np.ndarray] = {}
        self._decode, self._logits, self._encode, self._no_prior = decode, logits, encode, no_prior
        self._decode_at = decode_at or (lambda precision: None)
        self._logits_at = logits_at or (lambda precision: None)
        self._prior_precision = prior_precision
        self._guard = NanGuard()

    @property
    def nonfinite_recomputed(self) -> int:
        """Decode calls and sampling runs whose NaN/Inf images or logits the NaN guard recomputed at a higher
        precision."""
        return self._guard.count

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
        def guarded():
            def fresh(precision: str):
                return self._logits() if precision == self._prior_precision else self._logits_at(precision)

            return GuardedLogits(self._guard, self._prior_precision, fresh)

        return sample_chunks(guarded, n, self.code_grid, self.codebook_size, seed, temperature, top_k, CHUNK)

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
        return np.concatenate([to_uint8(self._finite(codes[i:i + CHUNK]), self.value_range)
                               for i in range(0, len(codes), CHUNK)])

    def _finite(self, codes: np.ndarray) -> np.ndarray:
        def failure(rows: np.ndarray, tried: list[str]) -> str:
            return (f"decoding code grid {int(rows[0])} gave NaN/Inf at {' and '.join(tried)} ({len(rows)} of "
                    f"{len(codes)} grids); the weights are damaged: check the model with `latentforge evaluate`")

        def run_at(precision: str):
            decode = self._decode_at(precision)
            return None if decode is None else (lambda feeds: [decode(feeds["codes"])])

        return self._guard.repair(self.precision, {"codes": codes}, [self._decode(codes)],
                                  lambda o: nonfinite_rows(o[0]), run_at, ("decoder",), failure)[0]

    def compress(self, images, quality: int | None = None) -> bytes:
        """uint8 images [N, H, W, C] -> the bytes of a .lfz stream (runtime/codec.py); prior checkpoints only."""
        from .codec import compress

        return compress(self, images, quality)

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


def on_graphs(path: Path, kind: str, backend: str, facts: dict, decoder: BackendGraph, prior: BackendGraph | None,
              cache_shape: tuple[int, ...], encode=None, no_prior: str = "") -> VQModel:
    """A VQModel over opened graphs: the VQ decoder (`codes` -> `image`) and the prior's step graph ((token,
    position, cache) -> (logits, kv)), which may be None."""
    def decode(codes: np.ndarray) -> np.ndarray:
        return decoder.run({"codes": codes})[0]

    def decode_at(precision: str):
        graph = graph_at(decoder, precision, decoder.threads)
        return None if graph is None else (lambda codes: graph.run({"codes": codes})[0])

    def run_step(token, position, cache):
        return prior.run({"token": token, "position": position, "cache": cache})

    def logits():
        return StepLogits(run_step, cache_shape)

    @functools.cache   # each precision's prior graph is opened once, on first need
    def prior_at(precision: str) -> BackendGraph | None:
        return graph_at(prior, precision, prior.threads)

    def logits_at(precision: str):
        graph = prior_at(precision)
        if graph is None:
            return None
        return StepLogits(lambda token, position, cache: graph.run({"token": token, "position": position,
                                                                    "cache": cache}), cache_shape)

    return VQModel(path, kind, backend, facts, decode, logits if prior is not None else None, encode,
                   decoder.threads, decoder.precision, no_prior, decode_at, logits_at,
                   prior.precision if prior is not None else "fp32")
