"""The Model `latentforge.load` gives for a latent-vector model (VAE, GAN): latents in, uint8 images out.

Built by runtime/loading.py over a decoder (runtime/protocols.Decoder) on any backend. Latents come
from `latentforge.latents`, so a seed gives the same image on every backend. A Model may be called
from many threads at once: every backend either is thread-safe (onnxruntime, torch) or keeps
per-thread state (OpenVINO requests, IO bindings) or a lock (TensorRT).
"""
from __future__ import annotations

import bisect
import math
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from latentforge.checkpoint import ENCODING_KINDS
from latentforge.errors import CheckpointError, InputError
from latentforge.images import from_uint8, to_uint8
from latentforge.latents import latents

from .artifact import ArtifactInfo
from .graphs import GraphDecoder, export_filter_graph
from .nan_guard import NanGuard, graph_at, nonfinite_rows
from .protocols import BackendGraph, Decoder


class Deferred:
    """A decoder not opened yet: `open()` gives it (BatchRouted opens it on the first call of its batch size)."""

    def __init__(self, open: Callable[[], Decoder]) -> None:
        self.open = open


class BatchRouted:
    """A decoder that hands each call to the decoder tuned for its batch size (see Model.route_batches).
    A Deferred one is opened on its first call, once, so loading pays only for the decoder it starts with."""

    def __init__(self, sizes: list[int], decoders: list[Decoder | Deferred], own: Decoder) -> None:
        self.sizes, self.decoders = sizes, decoders
        self.name, self.threads, self.precision, self.source = own.name, own.threads, own.precision, own.source
        self._lock = threading.Lock()

    def for_batch(self, n: int) -> Decoder:
        i = max(bisect.bisect_right(self.sizes, n) - 1, 0)
        decoder = self.decoders[i]
        if isinstance(decoder, Deferred):
            with self._lock:
                if isinstance(self.decoders[i], Deferred):
                    self.decoders[i] = self.decoders[i].open()
                decoder = self.decoders[i]
        return decoder

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.for_batch(len(z))(z)

    def images(self, z: np.ndarray) -> np.ndarray:
        return self.for_batch(len(z)).images(z)


class Model:
    """A loaded decoder/generator. Images at the edges are uint8 [N, H, W, C]; `decode_float` gives the
    model's own float32 [N, C, H, W] in `value_range`."""

    codebook_size = 0   # latent vectors, not code grids (runtime/vq_model.py)
    chosen_because = ""  # set by `load`: why this backend runs (a tuning record, the default rule, the caller)
    codec_points: tuple[int, ...] = ()   # set by `load` for a VAE with codec tables, with codec_factory(point)
    filter_choice: tuple | None = None   # set by `load` from a tuning record: (backend, precision, mode, threads,
    #                                      the filter graph kept beside the record or None, the record's path)

    def __init__(self, info: ArtifactInfo, decoder: Decoder | None, encoder=None,
                 filter_graph: BackendGraph | None = None, precision: str = "fp32") -> None:
        """`encoder`: a checkpoint's TorchDecoder (its `encode` and `module`), for the kinds that encode (a VAE, a
        gan-encoder)."""
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
        self._filter_fp32: Callable[[], BackendGraph] | None = None   # a tuned int8 filter IR's own source, at fp32
        self._filter_lock = threading.Lock()
        self._guard = NanGuard()

    @property
    def nonfinite_recomputed(self) -> int:
        """Calls whose NaN/Inf rows the NaN guard recomputed at a higher precision (decode and filter alike)."""
        return self._guard.count

    def swap_decoder(self, decoder: Decoder) -> None:
        """Decode on `decoder` from now on (a tuned engine the loaders do not open themselves: OpenVINO int8)."""
        self._decoder, self.backend, self.precision = decoder, decoder.name, decoder.precision
        self.threads = decoder.threads

    def route_batches(self, models: dict[int, Model | Callable[[], Model]]) -> None:
        """Decode each call on the model tuned for the largest batch size <= its N (the smallest for fewer);
        a model given as a loader is loaded on the first call that needs it.
        `backend`, `precision` and the filter stay this model's own: they are the small-batch winner's."""
        sizes = sorted(models)
        decoders = [models[b]._decoder if isinstance(models[b], Model) else Deferred(lambda f=models[b]: f()._decoder)
                    for b in sizes]
        self._decoder = BatchRouted(sizes, decoders, self._decoder)

    @property
    def has_encoder(self) -> bool:
        return self._encoder is not None

    def filter_graph(self) -> BackendGraph | None:
        """The frame -> frame graph (see runtime/filter_graph.py) on this model's backend: the loaded one, or,
        for a checkpoint that encodes (VAE, gan-encoder), exported in memory on first use. None when neither exists.
        A tuning record's `filter` (set by `load` as `filter_choice`) says the engine, and its graph file is read
        instead of exporting again."""
        with self._filter_lock:
            if self._filter_graph is None and self._encoder is not None and self.filter_choice is not None:
                from latentforge.checkpoint import read_info

                from .filter_graph import filter_graph_bytes
                from .graphs import open_graph
                from .ov_cache import beside, writing

                backend, precision, mode, threads, kept, record_path = self.filter_choice
                label = f"the tuned filter graph of {str(self.path)!r}"
                with beside(record_path, write=writing()):   # an OpenVINO winner imports what tune compiled
                    if mode == "nncf":   # the record's int8 IR, checked against its hash by matching_record
                        from .openvino_backend import OvGraph

                        self._filter_graph = OvGraph(kept, threads, label, "int8")
                        # no variant files beside an IR: the NaN guard climbs to the graph it was quantized
                        # from, exported again (once) when a frame first needs it
                        self._filter_fp32 = lambda: _fp32_filter(self, backend, threads, label)
                    else:
                        data = kept.read_bytes() if kept is not None else filter_graph_bytes(
                            self._encoder.module, read_info(self.path))
                        self._filter_graph = open_graph(backend, data, threads, label, precision, mode)
            if self._filter_graph is None and self._encoder is not None:
                self._filter_graph = export_filter_graph(self._encoder.module, self.path, self.backend,
                                                         self.threads, self.precision)
            return self._filter_graph

    @property
    def onnx_source(self):
        """The ONNX graph this model runs (a path, or the bytes exported in memory); None on the torch backend."""
        return self._decoder.source if self._decoder is not None else None

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
        decoder = self._decoder
        if isinstance(decoder, BatchRouted):   # the guard climbs from the precision of the decoder that runs
            decoder = decoder.for_batch(len(z))
        try:
            if images and decoder.name == "torch" and decoder.precision == "fp32":
                out, finite = decoder.checked_images(z)   # the fused uint8 op, and whether its float input was finite
                if finite:
                    return out
            out = self._finite(decoder, z, decoder(z))
        except MemoryError:
            raise InputError(f"decoding {len(z)} latents at once ran out of memory; decode fewer at a time") from None
        if images:
            if out.shape[1:] != (self.image_shape[2], *self.image_shape[:2]):
                raise CheckpointError(f"{str(self.path)!r} decodes to {list(out.shape[1:])}, but its metadata says "
                                      f"(H, W, C) {list(self.image_shape)}; re-export it with `latentforge export`")
            return to_uint8(out, self.value_range)
        return out

    def _finite(self, decoder: Decoder, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The NaN guard (runtime/nan_guard.py) over one decode; a finite output returns before anything is built."""
        if not nonfinite_rows(out).size:
            return out

        def failure(rows: np.ndarray, tried: list[str]) -> str:
            return (f"decoding z[{int(rows[0])}] gave NaN/Inf at {' and '.join(tried)} ({len(rows)} of {len(z)} "
                    f"latents); the latent is far outside the prior (largest |z| {float(np.abs(z[rows]).max()):.3g}) "
                    "or the weights are damaged: check the model with `latentforge evaluate`")

        def run_at(precision: str):
            higher = self._decoder_at(decoder, precision)
            return None if higher is None else (lambda feeds: [higher(feeds["z"])])

        return self._guard.repair(decoder.precision, {"z": z}, [out], lambda o: nonfinite_rows(o[0]), run_at,
                                  ("decoder", decoder.name, decoder.precision), failure)[0]

    def _decoder_at(self, decoder: Decoder, precision: str) -> Decoder | None:
        """`decoder` at a higher `precision`, or None when this model has none there."""
        if decoder.name == "torch":
            from .torch_backend import TorchDecoder

            return TorchDecoder(decoder.module, self.threads, precision, value_range=self.value_range)
        fallback = getattr(decoder, "fallback", None)   # a tuned int8 IR: the graph it was quantized from
        if fallback is not None:
            return fallback if fallback.precision == precision else None
        graph = graph_at(decoder.graph, precision, self.threads)
        return None if graph is None else GraphDecoder(graph, repr(str(graph.source)), self.value_range)

    def run_filter(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The filter graph's `frame_out` for `feeds`, under the NaN guard: a graph exported with the `finite`
        output (one flag per frame: its decoded image held no NaN/Inf) has the frames it flags recomputed at a
        higher precision, since uint8 cannot carry a NaN; an older graph without it runs unguarded."""
        graph = self.filter_graph()
        outputs = graph.run(feeds)
        if len(outputs) < 2:
            return outputs[0]
        frames = len(outputs[0])

        def failure(rows: np.ndarray, tried: list[str]) -> str:
            return (f"the filter gave NaN/Inf for frame {int(rows[0])} at {' and '.join(tried)} ({len(rows)} of "
                    f"{frames} frames); an edit offset far outside the prior, or damaged weights: check the model "
                    "with `latentforge evaluate`")

        def run_at(precision: str):
            if graph.precision == "int8" and self._filter_fp32 is not None:
                higher = self._filter_fp32() if precision == "fp32" else None
                return None if higher is None else higher.run
            higher = graph_at(graph, precision, self.threads)
            return None if higher is None else higher.run

        return self._guard.repair(graph.precision, feeds, outputs, lambda o: np.flatnonzero(o[1] == 0), run_at,
                                  ("filter", graph.name, graph.precision), failure)[0]

    def compress(self, images, quality: int | None = None) -> bytes:
        """uint8 images [N, H, W, C] -> the bytes of a .lfz stream (runtime/codec.py): the mean latent quantized at
        `quality` (1 = lowest rate); VAE checkpoints with codec tables beside them only."""
        from .codec import compress

        return compress(self, images, quality)

    def encode(self, images) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [N, H, W, C] -> (mu, logvar), float32 [N, D] each. Checkpoints that encode only (a VAE, a
        gan-encoder, whose logvar is 0)."""
        if self._encoder is None:
            if self.kind not in ENCODING_KINDS:
                raise InputError(f"encode needs a VAE or a gan-encoder, and this is a {self.kind} model (a generator "
                                 "alone has no encoder); load a VAE checkpoint, or train an encoder for this "
                                 "generator with `latentforge train gan-encoder GAN_CHECKPOINT`")
            raise InputError(f"encode needs the encoder, which the exported {str(self.path)!r} does not "
                             "contain; load the model's checkpoint (.safetensors) instead")
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


def _fp32_filter(model: Model, backend: str, threads, label: str) -> BackendGraph | None:
    """The fp32 filter graph a tuned int8 IR was quantized from, exported again from the checkpoint; None when
    that fails (the guard then refuses the frame with its own NumericalError)."""
    from latentforge.checkpoint import read_info
    from latentforge.errors import LatentforgeError

    from .filter_graph import filter_graph_bytes
    from .graphs import open_graph

    try:
        return open_graph(backend, filter_graph_bytes(model._encoder.module, read_info(model.path)), threads,
                          f"{label} at fp32", "fp32")
    except LatentforgeError:
        return None
