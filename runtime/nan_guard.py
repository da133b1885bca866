"""The NaN guard: rows of a reduced-precision output that hold NaN/Inf are recomputed at the next higher precision
the model has (int8 -> fp16 -> bf16 -> fp32), the call is counted, and a row still not finite at the top is a
NumericalError, never a black image. Model (latent decode, filter graph) and VQModel (code-grid decode) share it.

Where the higher precision comes from (`graph_at`): beside an exported file, the exporter's variant file (or the
file itself, which OpenVINO's bf16 hint ran at bf16); for a graph exported in memory, the same bytes at fp32; for
a TensorRT engine, the variant engine beside it, else the fp32 `.onnx` beside it on onnxruntime.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from latentforge.errors import CheckpointError, NumericalError

from .protocols import BackendGraph

LADDER = ("int8", "fp16", "bf16", "fp32")   # lowest first

Run = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def nonfinite_rows(out: np.ndarray) -> np.ndarray:
    """Indices of the rows of `out` holding NaN/Inf. First one dot product of the output with itself (NaN and Inf
    propagate into it; 1.5 us for a 64 px image against 8 us for a float64 sum): only when it is not finite,
    which a finite output above ~1e19 can also make it, are the rows checked one by one."""
    if out.dtype.kind != "f":
        return np.zeros(0, np.int64)
    flat = out.reshape(-1)
    if math.isfinite(float(np.dot(flat, flat))):
        return np.zeros(0, np.int64)
    return np.flatnonzero(~np.isfinite(out.reshape(len(out), -1)).all(axis=1))


def _rows(feeds: dict[str, np.ndarray], n: int, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The feeds of `rows` only; an input without the batch dimension (a temperature [1]) passes whole."""
    return {k: np.ascontiguousarray(v[rows]) if v.ndim and len(v) == n else v for k, v in feeds.items()}


class NanGuard:
    """One model's guard: its count (`count`, thread-safe) and the higher-precision runners opened on first use."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._opened: dict[tuple, Run | None] = {}

    def _runner(self, key: tuple, open_at: Callable[[], Run | None]) -> Run | None:
        with self._lock:
            if key not in self._opened:
                self._opened[key] = open_at()
            return self._opened[key]

    def repair(self, precision: str, feeds: dict[str, np.ndarray], outputs: list[np.ndarray],
               bad: Callable[[list[np.ndarray]], np.ndarray], run_at: Callable[[str], Run | None], key: tuple,
               failure: Callable[[np.ndarray, list[str]], str]) -> list[np.ndarray]:
        """`outputs` of `feeds`, with the rows `bad(outputs)` names recomputed by `run_at(precision)` up the ladder
        (cached under `key` + precision); NumericalError(`failure(rows still bad, precisions tried)`) at the top."""
        rows = bad(outputs)
        if not rows.size:
            return outputs
        n = len(outputs[0])
        tried = [precision]
        higher = LADDER[LADDER.index(precision) + 1:] if precision in LADDER else ()
        with self._lock:
            self.count += bool(higher)
        outputs = [np.array(o) for o in outputs]   # a backend's output may be read-only
        for step in higher:
            run = self._runner((*key, step), lambda s=step: run_at(s))
            if run is None:
                continue
            for out, new in zip(outputs, run(_rows(feeds, n, rows))):
                out[rows] = new
            tried.append(step)
            rows = rows[bad([o[rows] for o in outputs])]
            if not rows.size:
                return outputs
        raise NumericalError(failure(rows, tried))


def _base_name(path: Path, precision: str) -> Path:
    """`faces.fp16.onnx` at fp16 -> `faces.onnx`: the file a variant was named after."""
    tag = f".{precision}{path.suffix}"
    return path.with_name(path.name[:-len(tag)] + path.suffix) if path.name.endswith(tag) else path


def graph_at(graph: BackendGraph, precision: str, threads: int | None) -> BackendGraph | None:
    """`graph` at the higher `precision`, or None where this model has no such graph (see the module's note)."""
    from .graphs import open_exported, open_graph

    source = graph.source
    if isinstance(source, bytes):   # exported in memory at fp32 (OpenVINO may have run it at bf16)
        if precision != "fp32" or graph.name == "tensorrt":
            return None
        return open_graph(graph.name, source, threads, "the graph exported in memory at fp32", "fp32")
    base = _base_name(Path(source), graph.precision)
    try:
        if graph.name != "tensorrt":
            return open_exported(base, graph.name, threads, precision)
        return _tensorrt_at(base, precision, threads)
    except CheckpointError:   # no variant file at this precision
        return None


def _tensorrt_at(base: Path, precision: str, threads: int | None) -> BackendGraph | None:
    """The engine `NAME.<precision>.plan` (`NAME.plan` at fp32) beside `base`, else the `.onnx` the engines were
    built from, at `precision`, on onnxruntime: a TensorRT engine has one precision."""
    from .machine import installed

    plan = base if precision == "fp32" else base.with_name(f"{base.stem}.{precision}{base.suffix}")
    if plan.exists():
        from .trt_backend import TrtGraph, read_engine_sidecar

        engine = TrtGraph(plan, read_engine_sidecar(plan))
        return engine if engine.precision == precision else None
    graph = base.with_suffix(".onnx")
    if not graph.exists() or not installed("onnxruntime"):
        return None
    from .graphs import open_exported

    return open_exported(graph, "onnxruntime", threads, precision)

