"""Opening exported graphs on onnxruntime or OpenVINO: a file (or its precision variant), bytes exported in
memory, and the decoder view of a `z -> image` graph. Never imports torch unless a checkpoint's graph is
exported here.

The precision rule lives here once: OpenVINO runs bf16 as an inference hint on the fp32 graph (it lowers the
graph itself, where the CPU has bf16 units); any other precision but fp32 is the exporter's variant file
`NAME.<precision>.onnx`, whose metadata must say that precision.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from latentforge.errors import CheckpointError, LatentforgeError
from latentforge.golden import verify
from latentforge.images import to_uint8

from .backends import check_variant, variant_path
from .external_data import check_external_data
from .protocols import BackendGraph


def bf16_hint(backend: str, precision: str) -> bool:
    """Whether `precision` is OpenVINO's bf16 hint on the fp32 graph rather than a variant graph."""
    return backend == "openvino" and precision == "bf16"


def open_graph(backend: str, source, threads: int | None, label: str, precision: str = "fp32",
               mode: str = "fused") -> BackendGraph:
    """A graph (a path or serialized bytes) on `backend` ("onnxruntime" or "openvino"); `mode`: an onnxruntime
    session's setup (backends.ORT_MODES), which OpenVINO has none of."""
    if backend == "onnxruntime":
        from .ort_backend import OrtGraph

        return OrtGraph(source, threads, label, precision, mode)
    from .openvino_backend import OvGraph

    return OvGraph(source, threads, label, precision)


def open_exported(path: Path, backend: str, threads: int | None, precision: str, mode: str = "fused") -> BackendGraph:
    """An exported `.onnx` at `precision`: the file itself under OpenVINO's bf16 hint, else its checked variant."""
    if bf16_hint(backend, precision):
        check_external_data(path)
        return open_graph(backend, path, threads, repr(str(path)), precision)
    source = variant_path(path, precision)
    check_external_data(source)
    graph = open_graph(backend, source, threads, repr(str(source)), precision, mode)
    check_variant(graph.metadata, source, precision)
    return graph


def export_filter_graph(module, path: Path, backend: str, threads: int, precision: str) -> BackendGraph:
    """A checkpoint's filter graph (a VAE's or a gan-encoder's), exported in memory, on onnxruntime (or OpenVINO
    when that is the backend)."""
    from latentforge.checkpoint import read_info

    from .filter_graph import filter_graph_bytes

    info = read_info(path)
    data = filter_graph_bytes(module, info)
    on = "openvino" if backend == "openvino" else "onnxruntime"
    return open_graph(on, data, threads, f"the filter graph exported from {str(path)!r}",
                      precision if bf16_hint(on, precision) else "fp32")


def verify_graph(graph: BackendGraph, label: str, metadata: dict[str, str] | None = None) -> None:
    """Run the graph's golden input (latentforge/golden.py) and refuse it, in one line, unless it gives the golden
    output within the tolerance of the precision it runs at (OpenVINO's bf16 hint on an fp32 file: bf16's).
    `metadata`: where the golden check comes from when not the graph's own (the fp32 graph an int8 IR was made
    from, runtime/ov_int8.py)."""
    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return dict(zip(graph.output_names, graph.run(feeds)))
        except (MemoryError, LatentforgeError):
            raise
        except Exception as e:  # a graph whose inputs are not the golden ones: another model's graph
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CheckpointError(f"{label} failed on its own golden input ({first}); the file is damaged or not "
                                  "what its metadata says: re-export it with `latentforge export`") from None

    verify(graph.metadata if metadata is None else metadata, run, graph.precision, label)


class GraphDecoder:
    """z float32 [N, D] -> image float32 [N, C, H, W] through any backend's graph; `images` adds the uint8
    conversion in `value_range`."""

    def __init__(self, graph: BackendGraph, label: str, value_range: tuple[float, float]) -> None:
        if graph.input_names != ["z"] or graph.output_names != ["image"]:
            raise CheckpointError(f"{label} has inputs {graph.input_names} and outputs {graph.output_names}, "
                                  "expected ['z'] -> ['image']; re-export it with `latentforge export`")
        self.graph, self.label = graph, label
        self.name, self.threads, self.precision, self.source = graph.name, graph.threads, graph.precision, graph.source
        self.value_range = value_range
        self.fallback: GraphDecoder | None = None   # the NaN guard's higher precision when no file gives it

    def __call__(self, z: np.ndarray) -> np.ndarray:
        try:
            return self.graph.run({"z": z})[0]
        except (MemoryError, LatentforgeError):
            raise
        except Exception as e:  # onnxruntime's Fail, OpenVINO's RuntimeError: a damaged graph that still opened
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise CheckpointError(f"{self.label} failed to run ({first}); the file is damaged: re-export it with "
                                  "`latentforge export`") from None

    def images(self, z: np.ndarray) -> np.ndarray:
        return to_uint8(self(z), self.value_range)
