"""`load(path)` -> a Model that turns latents into uint8 images on onnxruntime or torch.

An `.onnx` runs on onnxruntime without ever importing torch; a checkpoint runs on torch
by default, or is exported in memory and run on onnxruntime. Latents come from
`latentforge.latents`, so a seed gives the same image on every backend.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from latentforge.checkpoint import load_checkpoint, read_info
from latentforge.errors import BackendUnavailable, InputError
from latentforge.images import from_uint8, to_uint8
from latentforge.latents import latents

from .artifact import ArtifactInfo, check_model_file, from_checkpoint, from_onnx_metadata, is_onnx
from .ort_backend import OrtDecoder, import_onnxruntime

BACKENDS = ("auto", "onnxruntime", "torch")


class Model:
    """A loaded decoder/generator. Images at the edges are uint8 [N, H, W, C]; `decode_float` gives the
    model's own float32 [N, C, H, W] in `value_range`."""

    def __init__(self, info: ArtifactInfo, decoder, encoder=None) -> None:
        self.path: Path = info.path
        self.kind: str = info.kind
        self.latent_dim: int = info.latent_dim
        self.image_shape: tuple[int, int, int] = info.image_shape
        self.value_range: tuple[float, float] = info.value_range
        self.attributes: dict[str, np.ndarray] = info.attributes
        self.point_dim: int = info.point_dim   # > 0: sample/decode give float32 [N, point_dim] points, not images
        self.backend: str = decoder.name
        self.threads: int = decoder.threads
        self._decoder = decoder
        self._encoder = encoder

    @property
    def onnx_source(self):
        """The ONNX graph this model runs (a path, or the bytes exported in memory); None on the torch backend."""
        return getattr(self._decoder, "source", None)

    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0) -> np.ndarray:
        """n images as uint8 [n, H, W, C] from z = latents(n, latent_dim, seed, temperature)."""
        return self.decode(latents(n, self.latent_dim, seed, temperature))

    def decode(self, z, chunk: int = 256) -> np.ndarray:
        """Latents [N, D] -> uint8 [N, H, W, C], `chunk` at a time, so a large N needs no float copy of it all.
        A point model gives its float32 [N, point_dim] points instead."""
        z = self._check_latents(z)
        if self.point_dim:
            return self._run(z)
        out = np.empty((len(z), *self.image_shape), dtype=np.uint8)
        for i in range(0, len(z), chunk):
            out[i:i + chunk] = to_uint8(self._run(z[i:i + chunk]), self.value_range)
        return out

    def decode_float(self, z) -> np.ndarray:
        """Latents [N, D] -> float32 [N, C, H, W] in `value_range`, exactly what the backend computed."""
        return self._run(self._check_latents(z))

    def _run(self, z: np.ndarray) -> np.ndarray:
        try:
            return self._decoder(z)
        except MemoryError:
            raise InputError(f"decoding {len(z)} latents at once ran out of memory; decode fewer at a time") from None

    def encode(self, images) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [N, H, W, C] -> (mu, logvar), float32 [N, D] each. VAE checkpoints only."""
        if self._encoder is None:
            if self.kind != "vae":
                raise InputError(f"encode needs a VAE, and this is a {self.kind} model (a generator has no "
                                 "encoder); load a VAE checkpoint to encode images")
            raise InputError(f"encode needs the VAE's encoder, which the exported {str(self.path)!r} does not "
                             "contain; load the VAE's checkpoint (.safetensors) instead")
        h, w, c = self.image_shape
        arr = np.asarray(images)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (h, w, c) or arr.shape[0] == 0:
            raise InputError(f"images must be uint8 [N, {h}, {w}, {c}] with N >= 1, "
                             f"got {arr.dtype} {list(arr.shape)}")
        return self._encoder.encode(from_uint8(arr, self.value_range))

    def _check_latents(self, z) -> np.ndarray:
        expected = f"[N, {self.latent_dim}]"
        arr = np.asarray(z)
        if arr.dtype.kind not in "fiu":
            raise InputError(f"z must be real numbers of shape {expected}, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != self.latent_dim:
            raise InputError(f"z must have shape {expected} with N >= 1, got {list(arr.shape)}")
        if arr.dtype != np.float32 or not arr.flags.c_contiguous:
            # np.errstate costs ~5 us, 2% of a batch-1 decode, so only a real cast pays for it. A float64
            # beyond float32's range becomes inf here and is reported just below.
            with np.errstate(over="ignore"):
                arr = np.ascontiguousarray(arr, dtype=np.float32)
        # NaN and Inf propagate into a float64 sum (which float32 entries cannot overflow), so a finite sum proves
        # every entry finite. For a few latents a Python sum is ~7 us cheaper than a numpy ufunc right after an
        # onnxruntime run: 3% of a batch-1 decode.
        total = sum(arr.ravel().tolist()) if arr.size <= 256 else float(arr.sum(dtype=np.float64))
        if not math.isfinite(total):
            row, col = (int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise InputError(f"z must be finite numbers of shape {expected}; z[{row}, {col}] is {arr[row, col]} "
                             "(float32 overflows above 3.4e38)")
        return arr

    def __repr__(self) -> str:
        return (f"Model(kind={self.kind!r}, latent_dim={self.latent_dim}, image_shape={self.image_shape}, "
                f"value_range={self.value_range}, backend={self.backend!r}, threads={self.threads}, "
                f"attributes={sorted(self.attributes)}, path={str(self.path)!r})")


def _check_threads(threads) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise InputError(f"threads must be a positive integer or None (one per physical core), got {threads!r}")


def load(path: str | os.PathLike, backend: str = "auto", threads: int | None = None) -> Model:
    """Load a checkpoint (`.safetensors`) or an exported `.onnx`.

    backend "auto" runs an `.onnx` on onnxruntime and a checkpoint on torch; "onnxruntime" with a
    checkpoint exports its decoder in memory (encode stays on torch). `threads` defaults to one per
    physical core.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    _check_threads(threads)
    path = check_model_file(path)
    if is_onnx(path):
        if backend == "torch":
            raise BackendUnavailable(f"{str(path)!r}: an .onnx runs on onnxruntime; load the checkpoint for the "
                                     "torch backend")
        decoder = OrtDecoder(path, threads, label=repr(str(path)))
        return Model(from_onnx_metadata(decoder.metadata, path), decoder)

    checkpoint = read_info(path)  # refuses pickles, truncated and foreign files before torch is imported
    info = from_checkpoint(checkpoint)
    if backend == "onnxruntime":
        import_onnxruntime()  # say it is missing before spending seconds on torch and the export
    from .torch_backend import TorchDecoder, checkpoint_to_onnx_bytes

    if backend == "onnxruntime" and info.point_dim:
        raise BackendUnavailable(f"{str(path)!r} is a point model, which runs on the torch backend only; "
                                 "use backend 'torch' or 'auto'")
    module, checkpoint = load_checkpoint(path)
    if backend == "onnxruntime":
        decoder = OrtDecoder(checkpoint_to_onnx_bytes(module, checkpoint), threads,
                             label=f"the graph exported from {str(path)!r}")
        encoder = TorchDecoder(module, threads) if info.kind == "vae" else None
    else:
        decoder = TorchDecoder(module, threads)
        encoder = decoder if info.kind == "vae" else None
    return Model(info, decoder, encoder)
