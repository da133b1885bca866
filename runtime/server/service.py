"""What the server serves: the loaded models by name, their micro-batchers, the bounded work gate and the
lifecycle (starting -> ready -> draining). Nothing here knows HTTP; runtime/server/app.py maps it to routes.

Every request names a model by its served name (the file stem); the set of names is fixed at start, so no
request can make the server load or read a file.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentforge.errors import InputError
from latentforge.latents import latents

from ..batching import MicroBatcher
from .metrics import Metrics


class Busy(Exception):
    """The global work queue is full (HTTP 503 with Retry-After)."""


class Draining(Exception):
    """The server is starting or shutting down and takes no new work (HTTP 503)."""


@dataclass(frozen=True)
class Limits:
    max_batch: int = 16           # rows per micro-batch
    max_wait_ms: float = 2.0      # how long a batch waits for more rows
    max_queue: int = 64           # requests admitted at once (running or waiting); more get 503
    max_n: int = 64               # images per sample/decode request
    max_body: int = 8 << 20       # bytes per request body
    max_pixels: int = 4096 * 4096  # pixels per uploaded image or frame, read from its header before decoding
    max_message: int = 4 << 20    # bytes per WebSocket message
    max_streams: int = 64         # WebSocket filter connections at once


class ServedModel:
    """One model under its name, with a decode micro-batcher and (for a model with a filter graph) a frame
    micro-batcher that every WebSocket stream shares."""

    def __init__(self, name: str, model, limits: Limits, metrics: Metrics, batcher=MicroBatcher) -> None:
        self.name = name
        self.model = model
        self.metrics = metrics
        self.batcher = batcher
        self.decoder = None if model.codebook_size or model.point_dim else batcher(
            self._decode_rows, max_batch=limits.max_batch, max_wait_ms=limits.max_wait_ms)
        self.graph = None
        self.frames = None

    def start_filter(self, limits: Limits) -> None:
        """The filter graph (a checkpoint exports it in memory, about a second) and its shared batcher."""
        if self.model.codebook_size or self.model.point_dim:
            return
        self.graph = self.model.filter_graph()
        if self.graph is not None:
            self.frames = self.batcher(self._filter_rows, max_batch=limits.max_batch, max_wait_ms=limits.max_wait_ms)

    def describe(self) -> dict:
        m = self.model
        return {"name": self.name, "kind": m.kind, "latent_dim": 0 if m.codebook_size else m.latent_dim,
                "image_shape": list(m.image_shape), "attributes": sorted(m.attributes), "backend": m.backend,
                "precision": m.precision, "codebook_size": m.codebook_size,
                "can_decode": self.decoder is not None,
                "can_edit": not (m.codebook_size or m.point_dim) and (m.has_encoder or self.graph is not None),
                "can_filter": self.frames is not None}

    def frame_rows(self, n: int) -> np.ndarray:
        """An empty batch of filter rows: the model-size frame, the edit offset and the noise (temperature
        already applied, so rows with different temperatures share one graph call with temperature = 1)."""
        h, w, c = self.model.image_shape
        d = self.model.latent_dim
        dtype = np.dtype([("frame", np.uint8, (h, w, 3)), ("offset", np.float32, (d,)), ("eps", np.float32, (d,))])
        return np.zeros(n, dtype)

    def _decode_rows(self, z: np.ndarray) -> np.ndarray:
        self.metrics.batch_size.labels(self.name, "decode").observe(len(z))
        return self.model.decode(z)

    def _filter_rows(self, rows: np.ndarray) -> np.ndarray:
        self.metrics.batch_size.labels(self.name, "filter").observe(len(rows))
        return self.model.run_filter({"frame": np.ascontiguousarray(rows["frame"]),
                                      "offset": np.ascontiguousarray(rows["offset"]),
                                      "temperature": np.ones(1, np.float32), "eps": np.ascontiguousarray(rows["eps"])})

    def close(self) -> None:
        for batcher in (self.decoder, self.frames):
            if batcher is not None:
                batcher.close()


class Service:
    """The models, the work gate and the ready/draining state. Thread-safe.

    `batcher(fn, max_batch=, max_wait_ms=)` makes each model's batchers: MicroBatcher (a thread) by default;
    a Ray Serve replica passes one built on @serve.batch (runtime/server/ray_app.py)."""

    def __init__(self, models: dict[str, object], limits: Limits | None = None, batcher=MicroBatcher) -> None:
        self.limits = limits or Limits()
        self.metrics = Metrics()
        self.models = {name: ServedModel(name, model, self.limits, self.metrics, batcher)
                       for name, model in models.items()}
        self.metrics.watch_guards(self.models)
        self.ready = False
        self.draining = False
        self.startup_error: str | None = None
        self.streams: set = set()  # open WebSocket filter streams (runtime/server/stream.py), on the event loop
        self._in_flight = 0
        self._lock = threading.Lock()

    def get(self, name: str) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            raise KeyError(name)
        return served

    @contextmanager
    def admit(self):
        """Hold one place in the bounded work queue for the duration of a request."""
        with self._lock:
            if not self.ready or self.draining:
                raise Draining()
            if self._in_flight >= self.limits.max_queue:
                raise Busy()
            self._in_flight += 1
            self.metrics.queue_depth.set(self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self.metrics.queue_depth.set(self._in_flight)

    def warm_up(self) -> None:
        """Build the filter graphs, run every model once through its serving path and check the result against
        the same call made directly: the batched path must give the direct path's pixels. Ready only after."""
        try:
            for served in self.models.values():
                served.start_filter(self.limits)
                check_model(served)
        except Exception as e:  # reported on /readyz; the server stays up so an operator can read why
            self.startup_error = f"{type(e).__name__}: {e}".splitlines()[0]
            return
        self.ready = True

    def close(self) -> None:
        for served in self.models.values():
            served.close()


def check_model(served: ServedModel) -> None:
    model = served.model
    if served.decoder is not None:
        z = latents(2, model.latent_dim, seed=0)
        try:
            direct = model.decode(z)
        except InputError:  # the exporter's filter graph: frames in and out, no decoder
            served.decoder.close()
            served.decoder = None
            direct = None
        if direct is not None and not np.array_equal(served.decoder(z), direct):
            raise InputError(f"{served.name}: the batched decode differs from a direct decode of the same latents")
    if served.frames is not None:
        rows = served.frame_rows(1)
        rows["frame"] = np.random.default_rng(0).integers(0, 256, rows["frame"].shape, dtype=np.uint8)
        direct = served.model.run_filter({"frame": rows["frame"], "offset": rows["offset"],
                                          "temperature": np.zeros(1, np.float32), "eps": rows["eps"]})
        if not np.array_equal(served.frames(rows), direct):
            raise InputError(f"{served.name}: the batched filter step differs from a direct one")


def served_name(path: str | Path) -> str:
    """A model's served name: its file stem, e.g. faces_vae for models/faces_vae.onnx."""
    return Path(path).name.split(".")[0]
