"""The NaN guard: rows of a reduced-precision output that hold NaN/Inf are recomputed at the next higher precision
the model has (int8 -> fp16 -> bf16 -> fp32), the call is counted, and a row still not finite at the top is a
NumericalError, never a black image. Model (latent decode, filter graph) and VQModel (code-grid decode, and the
prior's logits while it samples: GuardedLogits) share it.

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

    def note(self) -> None:
        """Count one call recomputed outside `repair` (a sampling run, GuardedLogits)."""
        with self._lock:
            self.count += 1

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


class GuardedLogits:
    """One sampling run's `tokens [N, t] -> logits [N, 1, K]` (runtime/vq_sampling.py) whose rows holding NaN/Inf
    are recomputed by the prior at the next higher precision it has. A row once moved up stays there for the rest
    of the run: its key/value cache at the lower precision may hold the overflow too. Each precision's logits
    function (`fresh(precision)`: a new one with its own cache, or None where the prior has no such graph) runs
    every row moved to it or above, so its set of rows only grows and it restarts from the prefix only when one
    joins. The run counts once in `guard`; a row not finite at the top is a NumericalError, never a code drawn from
    NaN (which NumPy's sampling would turn into code 0)."""

    def __init__(self, guard: NanGuard, precision: str, fresh: Callable[[str], Callable | None]) -> None:
        self.guard, self.fresh = guard, fresh
        higher = LADDER[LADDER.index(precision) + 1:] if precision in LADDER else ()
        self.levels: list[tuple[str, Callable | None]] = [(precision, fresh(precision))]
        self.pending = list(higher)       # precisions not yet opened, lowest first
        self.level: np.ndarray | None = None   # each row's index into self.levels

    def _next_level(self, at: int) -> int | None:
        """The index of the first precision above level `at` that the prior has, opening it on first use."""
        while at + 1 >= len(self.levels) and self.pending:
            precision = self.pending.pop(0)
            fn = self.fresh(precision)
            if fn is not None:
                self.levels.append((precision, fn))
        return at + 1 if at + 1 < len(self.levels) else None

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        n = len(tokens)
        if self.level is None or len(self.level) != n:
            self.level = np.zeros(n, np.int64)
        out = np.array(self.levels[0][1](tokens))
        for i in range(1, len(self.levels)):
            rows = np.flatnonzero(self.level >= i)
            if rows.size:
                out[self.level == i] = self.levels[i][1](np.ascontiguousarray(tokens[rows]))[self.level[rows] == i]
        while (bad := nonfinite_rows(out[:, -1])).size:
            row = int(bad[0])
            up = self._next_level(int(self.level[row]))
            if up is None:
                tried = " and ".join(p for p, _ in self.levels[:int(self.level[row]) + 1])
                raise NumericalError(f"the code prior gave NaN/Inf logits for image {row} at code "
                                     f"{tokens.shape[1] - 1} at {tried} ({len(bad)} of {n} images); the weights are "
                                     "damaged or overflow: check the model with `latentforge evaluate`")
            if not (self.level > 0).any():
                self.guard.note()
            self.level[bad[self.level[bad] < up]] = up   # every bad row below `up` moves up together
            rows = np.flatnonzero(self.level >= up)
            fresh = self.levels[up][1](np.ascontiguousarray(tokens[rows]))
            at_up = self.level == up
            out[at_up] = fresh[self.level[rows] == up]
        return out


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

