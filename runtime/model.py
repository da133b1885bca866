"""`load(path)` -> a Model that turns latents into uint8 images on onnxruntime, OpenVINO, TensorRT or torch.

An `.onnx` runs on onnxruntime or OpenVINO without ever importing torch; a `.plan` on TensorRT;
a checkpoint runs on torch by default, or is exported in memory and run on onnxruntime or
OpenVINO. Latents come from `latentforge.latents`, so a seed gives the same image on every
backend. A Model may be called from many threads at once: every backend either is thread-safe
(onnxruntime, torch) or keeps per-thread state (OpenVINO requests, IO bindings) or a lock (TensorRT).
"""
from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np

from latentforge.checkpoint import load_checkpoint, read_info
from latentforge.checkpoint import PREFIX as META
from latentforge.errors import BackendUnavailable, CheckpointError, InputError
from latentforge.images import from_uint8, to_uint8
from latentforge.latents import latents

from .artifact import ArtifactInfo, check_model_file, from_checkpoint, from_onnx_metadata, is_onnx
from .backends import NAMES, PRECISIONS, backend_status_or_raise, check_variant, is_plan, pick, variant_path

BACKENDS = ("auto", *NAMES)


class Model:
    """A loaded decoder/generator. Images at the edges are uint8 [N, H, W, C]; `decode_float` gives the
    model's own float32 [N, C, H, W] in `value_range`."""

    def __init__(self, info: ArtifactInfo, decoder, encoder=None, filter_graph=None, precision: str = "fp32") -> None:
        self.path: Path = info.path
        self.kind: str = info.kind
        self.latent_dim: int = info.latent_dim
        self.image_shape: tuple[int, int, int] = info.image_shape
        self.value_range: tuple[float, float] = info.value_range
        self.attributes: dict[str, np.ndarray] = info.attributes
        runner = decoder or filter_graph
        self.backend: str = runner.name
        self.threads: int = runner.threads
        self.precision: str = precision  # what runs: OpenVINO may compile f32 where bf16 was asked
        self.point_dim: int = info.point_dim   # > 0: sample/decode give float32 [N, point_dim] points, not images
        self._decoder = decoder
        self._encoder = encoder
        self._filter_graph = filter_graph
        self._filter_lock = threading.Lock()

    @property
    def has_encoder(self) -> bool:
        return self._encoder is not None

    def filter_graph(self):
        """The frame -> frame graph (see runtime/filter_graph.py) on this model's backend: the loaded one, or,
        for a VAE checkpoint, exported in memory on first use. None when neither exists."""
        with self._filter_lock:
            if self._filter_graph is None and self.kind == "vae" and hasattr(self._encoder, "module"):
                self._filter_graph = _export_filter_graph(self._encoder.module, self.path, self.backend,
                                                          self.threads, self.precision)
            return self._filter_graph

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
            out[i:i + chunk] = self._run(z[i:i + chunk], images=True)
        return out

    def decode_float(self, z) -> np.ndarray:
        """Latents [N, D] -> float32 [N, C, H, W] in `value_range`, exactly what the backend computed."""
        return self._run(self._check_latents(z))

    def _run(self, z: np.ndarray, images: bool = False) -> np.ndarray:
        if self._decoder is None:
            raise InputError(f"{str(self.path)!r} is a filter graph (frames in, frames out), not a decoder; "
                             "run it with latentforge.Filter(model), or load the decoder .onnx to decode latents")
        try:
            if not images:
                return self._decoder(z)
            # A backend with its own uint8 conversion (torch: the fused to_uint8_image op) does it on its side.
            if hasattr(self._decoder, "images"):
                return self._decoder.images(z)
            return to_uint8(self._decoder(z), self.value_range)
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

    def edit(self, images, amounts: dict[str, float], attributes: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Encode uint8 images, move each posterior mean by sum(amount * direction), decode: uint8 [N, H, W, C].

        Directions come from `attributes` (e.g. latentforge.directions.load_directions) or the model's own.
        """
        directions = self.attributes if attributes is None else attributes
        unknown = sorted(set(amounts) - set(directions))
        if unknown:
            have = ", ".join(sorted(directions)) or "none; compute some with `latentforge attributes`"
            raise InputError(f"no direction for attribute(s) {unknown}; this model has: {have}")
        mu, _ = self.encode(images)
        for name, amount in amounts.items():
            mu = mu + np.float32(amount) * np.asarray(directions[name], dtype=np.float32)
        return self.decode(mu)

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
                f"value_range={self.value_range}, backend={self.backend!r}, precision={self.precision!r}, "
                f"threads={self.threads}, "
                f"attributes={sorted(self.attributes)}, path={str(self.path)!r})")


def _check_threads(threads) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise InputError(f"threads must be a positive integer or None (one per physical core), got {threads!r}")


def load(path: str | os.PathLike, backend: str = "auto", threads: int | None = None,
         precision: str = "fp32", decoder: str | os.PathLike | None = None) -> Model:
    """Load a checkpoint (`.safetensors`), an exported `.onnx` (decoder or filter graph) or a TensorRT `.plan`.

    A vqvae or prior checkpoint, or an exported VQ decoder / prior `.onnx`, gives a `VQModel` (code grids).

    backend "auto" picks the fastest available for the artifact (see runtime/backends.py; `Model.backend`
    says which). "onnxruntime"/"openvino" with a checkpoint export its decoder in memory (encode stays on
    torch). `precision` other than fp32 loads the exporter's variant `NAME.<precision>.onnx` beside an
    `.onnx`; on OpenVINO bf16 is an inference hint on the fp32 graph. `threads` defaults to one per
    physical core.
    On the torch backend (a checkpoint) precision "bf16" lets the convolutions run in bfloat16.
    An exported VQ code prior (`--part prior`) samples with its VQ decoder graph: `decoder="decoder.onnx"`.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    _check_threads(threads)
    path = check_model_file(path)
    if decoder is not None:
        decoder = check_model_file(decoder)
        if not is_onnx(path):
            raise InputError(f"decoder= goes with an exported VQ prior .onnx; {str(path)!r} is not one (a prior "
                             "checkpoint carries its own decoder: load it alone)")
        if not is_onnx(decoder):
            raise InputError(f"decoder= must be the VQ decoder .onnx (made by `latentforge export PRIOR_CKPT --part "
                             f"decoder -o DECODER.onnx`), got {str(decoder)!r}")
    if backend == "auto":
        backend = pick(path, is_onnx(path))
    if is_plan(path):
        return _load_plan(path, backend)
    if is_onnx(path):
        return _load_onnx(path, backend, threads, precision, decoder)
    return _load_checkpoint(path, backend, threads, precision)


class GraphDecoder:
    """z float32 [N, D] -> image float32 [N, C, H, W] through any backend's graph (other attributes are the graph's)."""

    def __init__(self, graph, label: str) -> None:
        if graph.input_names != ["z"] or graph.output_names != ["image"]:
            raise CheckpointError(f"{label} has inputs {graph.input_names} and outputs {graph.output_names}, "
                                  "expected ['z'] -> ['image']; re-export it with `latentforge export`")
        self.graph = graph

    def __getattr__(self, name):
        if name == "graph":  # not set yet (a copy being built): never recurse
            raise AttributeError(name)
        return getattr(self.graph, name)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.graph.run({"z": z})[0]


def open_graph(backend: str, source, threads: int | None, label: str, precision: str = "fp32"):
    """An exported graph on `backend` ("onnxruntime" or "openvino")."""
    if backend == "onnxruntime":
        from .ort_backend import OrtGraph

        return OrtGraph(source, threads, label, precision)
    from .openvino_backend import OvGraph

    return OvGraph(source, threads, label, precision)


def _load_onnx(path: Path, backend: str, threads, precision: str, decoder: Path | None = None):
    if backend not in ("onnxruntime", "openvino"):
        raise BackendUnavailable(f"{str(path)!r}: an .onnx runs on onnxruntime or openvino; load the checkpoint for "
                                 "the torch backend, or the exporter's .plan for tensorrt")
    hinted = backend == "openvino" and precision == "bf16"  # OpenVINO lowers the fp32 graph itself
    source = path if hinted else variant_path(path, precision)
    label = repr(str(source))
    graph = open_graph(backend, source, threads, label, precision)
    meta = graph.metadata
    if not hinted:
        check_variant(meta, source, precision)
    if meta.get(META + "part") in ("vq_decoder", "prior"):  # code grids, not latent vectors
        from .vq_model import load_vq_graphs

        def open_decoder(decoder_path: Path):
            source = decoder_path if hinted else variant_path(decoder_path, precision)
            graph = open_graph(backend, source, threads, repr(str(source)), precision)
            if not hinted:
                check_variant(graph.metadata, source, precision)
            return graph

        return load_vq_graphs(path, graph, backend, decoder, open_decoder)
    if decoder is not None:
        raise InputError(f"decoder= goes with an exported VQ prior; {str(path)!r} is a {meta.get(META + 'part')!r} "
                         "graph, so load it alone")
    info = from_onnx_metadata(meta, path)
    actual = graph.precision
    if meta.get(META + "part") == "filter":
        return Model(info, None, filter_graph=graph, precision=actual)
    return Model(info, GraphDecoder(graph, label), precision=actual)


def _load_plan(path: Path, backend: str) -> Model:
    if backend != "tensorrt":
        raise BackendUnavailable(f"{str(path)!r} is a TensorRT engine; it runs only on backend='tensorrt'")
    from .trt_backend import TrtGraph, read_engine_sidecar, sidecar_metadata

    sidecar = read_engine_sidecar(path)
    meta = sidecar_metadata(sidecar)
    if meta.get(META + "part") in ("vq_decoder", "prior"):
        raise BackendUnavailable(f"{str(path)!r} is a VQ {meta[META + 'part']} engine, which the runtime does not load "
                                 "yet; run the exported .onnx on onnxruntime or openvino")
    info = from_onnx_metadata(meta, path)
    precision = sidecar.get("metadata", {}).get("precision", "fp32")
    if meta.get(META + "part") == "filter":
        return Model(info, None, filter_graph=TrtGraph(path, sidecar), precision=precision)
    return Model(info, GraphDecoder(TrtGraph(path, sidecar), repr(str(path))), precision=precision)


def _load_checkpoint(path: Path, backend: str, threads, precision: str) -> Model:
    if backend == "tensorrt":
        raise BackendUnavailable(f"{str(path)!r}: TensorRT runs engines; build one with the exporter and load "
                                 "its .plan")
    checkpoint = read_info(path)  # refuses pickles, truncated and foreign files before torch is imported
    if checkpoint.kind in ("vqvae", "prior"):  # code grids, not latent vectors: their own model class
        from .vq_model import load_vq

        return load_vq(path, backend, threads, precision)
    info = from_checkpoint(checkpoint)
    if backend in ("onnxruntime", "openvino"):
        if precision not in ("fp32", "bf16") or (precision == "bf16" and backend == "onnxruntime"):
            raise InputError(f"a checkpoint on {backend} is exported in memory at fp32; for {precision} export the "
                             f"variant with `latentforge export {path} --dtype {precision} -o "
                             f"{path.with_suffix('')}.{precision}.onnx` and load that")
        backend_status_or_raise(backend)  # say it is missing before spending seconds on torch and the export
    from .torch_backend import TorchDecoder, checkpoint_to_onnx_bytes

    if backend == "onnxruntime" and info.point_dim:
        raise BackendUnavailable(f"{str(path)!r} is a point model, which runs on the torch backend only; "
                                 "use backend 'torch' or 'auto'")
    module, checkpoint = load_checkpoint(path)
    if backend in ("onnxruntime", "openvino"):
        label = f"the graph exported from {str(path)!r}"
        decoder = GraphDecoder(open_graph(backend, checkpoint_to_onnx_bytes(module, checkpoint), threads, label,
                                          precision), label)
        encoder = TorchDecoder(module, threads) if info.kind == "vae" else None
        return Model(info, decoder, encoder, precision=decoder.precision)
    decoder = TorchDecoder(module, threads, precision=precision, value_range=info.value_range)
    return Model(info, decoder, decoder if info.kind == "vae" else None, precision=precision)


def _export_filter_graph(module, path: Path, backend: str, threads: int, precision: str):
    """A VAE checkpoint's filter graph, exported in memory, on onnxruntime (or OpenVINO when that is the backend)."""
    from .filter_graph import filter_graph_bytes

    info = read_info(path)
    data = filter_graph_bytes(module, info)
    on = "openvino" if backend == "openvino" else "onnxruntime"
    return open_graph(on, data, threads, f"the filter graph exported from {str(path)!r}",
                      precision if on == "openvino" else "fp32")
