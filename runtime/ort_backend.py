"""The onnxruntime backend: one CPU session tuned for low-latency decoding. Never imports torch."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from latentforge.errors import BackendUnavailable, CheckpointError

from .machine import physical_cores

NAME = "onnxruntime"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed; pip install onnxruntime") from None
    return onnxruntime


def session_options(threads: int | None):
    """Options for one decode at a time on a small CPU.

    One intra-op thread per physical core (SMT siblings only contend for the FMA units),
    no inter-op pool (the graph is a chain: nothing runs in parallel), every graph
    optimization (Gemm/activation fusion, NCHWc conv layouts for this CPU).
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the optimizer's informational lines are not the user's concern
    return options


def open_session(source: str | Path | bytes, options=None, label: str = "ONNX model"):
    """An InferenceSession on the CPU provider, or a CheckpointError for a file that is not a valid ONNX model."""
    ort = import_onnxruntime()
    where = source if isinstance(source, bytes) else str(source)
    try:
        return ort.InferenceSession(where, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises InvalidProtobuf, Fail, ... from its C++ core
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{label} is not a readable ONNX model ({first}); re-export it with "
                              "`latentforge export`") from None


class OrtDecoder:
    """z float32 [N, D] -> image float32 [N, C, H, W] through one onnxruntime session."""

    name = NAME

    def __init__(self, source: str | Path | bytes, threads: int | None = None, label: str = "ONNX model") -> None:
        self.source = source  # a path or the serialized graph, so a peer session can open the same model
        self.threads = threads or physical_cores()
        self.session = open_session(source, session_options(threads), label)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != ["z"] or [o.name for o in outputs] != ["image"]:
            raise CheckpointError(f"{label} has inputs {[i.name for i in inputs]} and outputs "
                                  f"{[o.name for o in outputs]}, expected ['z'] -> ['image']; "
                                  "re-export it with `latentforge export`")

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        # Plain run() measured fastest here: IO binding into a fresh output array costs ~10 us more per
        # call at batch 1 (and equal at 16), and binding a reused buffer would alias the arrays we return.
        return self.session.run(["image"], {"z": z})[0]
