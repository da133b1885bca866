"""The onnxruntime backend: one session tuned for low-latency runs. Never imports torch.

On the CPU provider by default; with onnxruntime-gpu installed, the TensorRT and CUDA
execution providers come first (onnxruntime falls back per node to the next provider).
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from latentforge.errors import BackendUnavailable, CheckpointError

from .machine import installed, physical_cores

NAME = "onnxruntime"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable('onnxruntime is not installed; pip install "latentforge[cpu]" '
                                 "(or [gpu] on an NVIDIA machine)") from None
    return onnxruntime


def providers() -> list[str]:
    """The GPU providers this onnxruntime build can use, best first, then the CPU one.

    onnxruntime-gpu lists the TensorRT provider whether or not TensorRT's libraries are installed, and a
    session then fails to create it; so it is offered only when the tensorrt package is importable.
    """
    available = set(import_onnxruntime().get_available_providers())
    if not installed("tensorrt"):
        available.discard("TensorrtExecutionProvider")
    return [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]


def session_options(threads: int | None, mode: str = "fused"):
    """Options for one run at a time on a small CPU.

    With `threads` None, onnxruntime's own default pool: one intra-op thread per physical core, and, only when
    the count is left unset, each pinned to its core. Pinned, the faces decoder ran 0.26 against 0.40 ms at
    batch 1 beside the same count set explicitly on a shared 2-core EPYC, so a count is set only when asked
    for. `mode` (backends.ORT_MODES): "1thread" runs one intra-op thread (no hand-off for a tiny graph),
    "nospin" keeps the pool from spinning between runs (the other threads of a busy machine get the cores).
    Every graph optimization (Gemm/activation fusion, NCHWc conv layouts for this CPU), sequential execution.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    if mode == "1thread":
        options.intra_op_num_threads = 1
    elif threads is not None:
        options.intra_op_num_threads = threads
    if mode == "nospin":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the optimizer's informational lines are not the user's concern
    return options


def open_session(source: str | Path | bytes, options=None, label: str = "ONNX model", gpu: bool = True):
    """An InferenceSession (GPU providers first when present and `gpu`), or a CheckpointError for a bad file."""
    ort = import_onnxruntime()
    where = source if isinstance(source, bytes) else str(source)
    chosen = providers() if gpu else ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(where, options, providers=chosen)
    except Exception as e:  # onnxruntime raises InvalidProtobuf, Fail, ... from its C++ core
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{label} is not a readable ONNX model ({first}); re-export it with "
                              "`latentforge export`") from None


class OrtGraph:
    """Any exported graph on one session: `run(feeds)` -> outputs in graph order.

    `run(feeds, out=...)` writes the first output into the caller's preallocated array through IO
    binding, so a frame loop reuses one buffer instead of allocating per call. A binding is per
    thread: session.run is thread-safe, a shared IOBinding is not. On the CPU provider it measured no faster
    than run() for the 64 px filter graph at batch 1 (0.57 vs 0.55 ms p50), so the Filter calls run(); with a
    GPU provider it saves the per-call allocation of the host copy.
    """

    name = NAME

    def __init__(self, source: str | Path | bytes, threads: int | None = None, label: str = "ONNX model",
                 precision: str = "fp32", mode: str = "fused") -> None:
        self.source = source  # a path or the serialized graph, so a peer session can open the same model
        self.threads = 1 if mode == "1thread" else threads or physical_cores()
        self.precision, self.mode = precision, mode
        self.session = open_session(source, session_options(threads, mode), label)
        self.provider = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._local = threading.local()

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, feeds: dict[str, np.ndarray], out: np.ndarray | None = None) -> list[np.ndarray]:
        if out is None:
            return self.session.run(self.output_names, feeds)
        binding = getattr(self._local, "binding", None)
        if binding is None:
            binding = self._local.binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        binding.bind_output(self.output_names[0], "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)
        self.session.run_with_iobinding(binding)
        return [out]
