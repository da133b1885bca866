"""The OpenVINO backend: an exported ONNX graph compiled for the CPU plugin. Optional: pip install "latentforge[openvino]".

precision="bf16" sets INFERENCE_PRECISION_HINT=bf16. OpenVINO honours it only where the CPU has
bf16 units (AVX512_BF16 or AMX, listed as "BF16" in OPTIMIZATION_CAPABILITIES); elsewhere, e.g.
an AVX2-only CPU, it silently compiles f32. `precision` reports what was compiled, not what was asked.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from latentforge.errors import BackendUnavailable, CheckpointError

from .machine import physical_cores
from .ov_cache import blob_for, compile_or_import

NAME = "openvino"


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable('openvino is not installed; pip install "latentforge[openvino]"') from None
    return openvino


def supports_bf16() -> bool:
    core = import_openvino().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def hint_name(value) -> str:
    """OpenVINO's short element-type name ("bf16", "f32") of an INFERENCE_PRECISION_HINT reading.

    Recent releases return an `openvino.Type`, whose str() is "<Type: 'bfloat16'>", older ones a plain
    string; both are read through the type's own short name so neither is mistaken for f32.
    """
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    text = str(value).strip().lower()
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}.get(text, text)


class OvGraph:
    """Any exported graph compiled once; `run(feeds)` -> outputs in graph order.

    A compiled model may be shared across threads but an infer request may not, so each thread gets
    its own request (created on its first call).
    """

    name = NAME

    def __init__(self, source: str | Path | bytes, threads: int | None = None, label: str = "ONNX model",
                 precision: str = "fp32") -> None:
        ov = import_openvino()
        self.source = source
        self.threads = threads or physical_cores()
        core = ov.Core()
        try:
            model = core.read_model(source if isinstance(source, bytes) else str(source))
            config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
            self.compiled, self.imported = compile_or_import(core, model, config,
                                                             blob_for(source, precision, self.threads, ov.__version__))
        except Exception as e:  # OpenVINO raises RuntimeError with a multi-line C++ trace
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{label} could not be compiled by OpenVINO ({first}); "
                                  "use backend='onnxruntime'") from None
        # fp16/int8 are the exporter's variant graphs, run as they are; bf16 is whatever the hint achieved
        compiled_as = hint_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision = ("bf16" if compiled_as == "bf16" else "fp32") if precision == "bf16" else precision
        # the graph's own names, read before compiling: the compiled model may merge a tensor's names (the
        # filter graph's `finite` came out as "/Not_2_output_0"); its outputs keep the graph's order
        self.input_names = [i.get_any_name() for i in model.inputs]
        self.output_names = [o.get_any_name() for o in model.outputs]
        self._metadata = _metadata(model)
        self._local = threading.local()

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def run(self, feeds: dict[str, np.ndarray], out: np.ndarray | None = None) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer(feeds)
        # The request's output tensors are reused by its next call, so hand back copies (or fill `out`).
        first = request.get_output_tensor(0).data
        if out is not None:
            np.copyto(out, first)
            first = out
        else:
            first = first.copy()
        return [first] + [request.get_output_tensor(i).data.copy() for i in range(1, len(self.output_names))]


def _metadata(model) -> dict[str, str]:
    """The ONNX metadata_props, which OpenVINO's ONNX frontend keeps under rt_info["framework"]."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    return {str(k): v.astype(str) for k, v in info["framework"].items()}
