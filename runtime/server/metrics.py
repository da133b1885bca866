"""The server's Prometheus metrics, in a registry of its own so that two apps in one process (tests, a
Ray Serve replica beside a local one) never collide in prometheus-client's global registry."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("latentforge_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("latentforge_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("latentforge_queue_depth", "requests admitted and not yet answered", registry=r)
        self.batch_size = Histogram("latentforge_batch_size", "rows per micro-batch", ["model", "path"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.stream_fps = Gauge("latentforge_stream_fps", "frames out per second of each filter stream",
                                ["stream"], registry=r)
        self.frames = Counter("latentforge_stream_frames", "filter frames by outcome (out, dropped)",
                              ["outcome"], registry=r)
        self.streams = Gauge("latentforge_streams", "open filter streams", registry=r)

    def watch_guards(self, models: dict) -> None:
        """Export each served model's NaN-guard count (runtime/nan_guard.py), read from the model at scrape time."""
        self.registry.register(_GuardCounts(models))

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _GuardCounts:
    """latentforge_nonfinite_recomputed_total{model}: calls whose NaN/Inf rows the NaN guard recomputed at a higher
    precision. The model keeps the count (decode, sample and the filter all add to it); this only reports it."""

    def __init__(self, models: dict) -> None:
        self.models = models

    def collect(self):
        family = CounterMetricFamily("latentforge_nonfinite_recomputed", "calls whose NaN/Inf rows the NaN guard "
                                     "recomputed at a higher precision, by model", labels=["model"])
        for name, served in self.models.items():
            family.add_metric([name], served.model.nonfinite_recomputed)
        yield family
