"""The TensorRT backend: a serialized engine (`.plan`) from the exporter, run on a CUDA stream.

Written against the TensorRT 10 name-based tensor API: deserialize_cuda_engine, one execution
context, set_input_shape / set_tensor_address per call, execute_async_v3 on a torch.cuda stream
(torch owns the device buffers, so no second CUDA binding is needed). With cuda_graph=True the
enqueue is captured once per input shape into a CUDA graph and replayed, which removes the
per-launch CPU overhead that dominates a batch-1 decode. Needs an NVIDIA GPU and
pip install "latentforge[tensorrt]"; everything here is skipped in CPU-only tests.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from latentforge.checkpoint import PREFIX as META
from latentforge.errors import BackendUnavailable, CheckpointError

from .machine import cuda_reason, import_tensorrt

NAME = "tensorrt"


def read_engine_sidecar(plan: Path) -> dict:
    """The one integration point with the exporter's sidecar `<engine>.plan.json`: checked there, read here."""
    from .engine_sidecar import check_engine  # written with the exporter; imported only for a .plan

    return check_engine(plan)


def sidecar_metadata(sidecar: dict) -> dict[str, str]:
    """The sidecar's "metadata" in the form an ONNX graph's metadata_props take (prefixed, JSON values)."""
    return {META + str(k): v if isinstance(v, str) else json.dumps(v) for k, v in sidecar["metadata"].items()}


class TrtGraph:
    """An engine's tensors by name; `run(feeds)` -> outputs in engine order, as NumPy arrays."""

    name = NAME
    threads = 1  # host threads do not matter: the GPU runs the graph

    def __init__(self, plan: str | Path, sidecar: dict, cuda_graph: bool = False) -> None:
        trt = import_tensorrt()
        reason = cuda_reason()
        if reason:
            raise BackendUnavailable(f"the tensorrt backend needs a CUDA GPU: {reason}")
        import torch

        self._torch = torch
        self.source = Path(plan)
        self.sidecar = sidecar
        self.precision = str(sidecar.get("metadata", {}).get("precision", "fp32"))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.source.read_bytes())
        if self.engine is None:
            raise CheckpointError(f"TensorRT could not deserialize {str(plan)!r} (built by TensorRT "
                                  f"{sidecar.get('tensorrt_version')} for {sidecar.get('gpu_name')}); rebuild it here "
                                  "with `latentforge export --tensorrt`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: _torch_dtype(trt, torch, self.engine.get_tensor_dtype(n)) for n in names}
        self.stream = torch.cuda.Stream()
        self.cuda_graph = cuda_graph
        self._graphs: dict[tuple, tuple] = {}  # input shapes -> (CUDAGraph, static inputs, static outputs)
        self._lock = threading.Lock()  # one execution context: calls from many threads take turns

    @property
    def metadata(self) -> dict[str, str]:
        return sidecar_metadata(self.sidecar)

    def _bind(self, inputs: dict) -> dict:
        """Set shapes and addresses for `inputs` (device tensors); allocate and bind the outputs."""
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = self._torch.empty(shape, dtype=self._dtypes[name], device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        return outputs

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise CheckpointError(f"TensorRT failed to run {str(self.source)!r}; see the TensorRT log above")

    def run(self, feeds: dict[str, np.ndarray], out: np.ndarray | None = None) -> list[np.ndarray]:
        torch = self._torch
        with self._lock, torch.cuda.stream(self.stream):
            host = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names}
            if self.cuda_graph:
                outputs = self._replay(host)
            else:
                device = {n: t.to("cuda", self._dtypes[n], non_blocking=True) for n, t in host.items()}
                outputs = self._bind(device)
                self._enqueue()
            results = [outputs[n].cpu() for n in self.output_names]  # .cpu() waits for the stream
        arrays = [r.numpy() for r in results]
        if out is not None:
            np.copyto(out, arrays[0])
            arrays[0] = out
        return arrays

    def _replay(self, host: dict) -> dict:
        """Copy into the static buffers of this shape's captured graph and replay it (capturing on first use)."""
        torch = self._torch
        key = tuple((n, tuple(t.shape)) for n, t in host.items())
        if key not in self._graphs:
            static = {n: torch.empty(t.shape, dtype=self._dtypes[n], device="cuda") for n, t in host.items()}
            outputs = self._bind(static)
            self._enqueue()  # TensorRT sets up shape-dependent state on the first enqueue; never capture that
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self._enqueue()
            self._graphs[key] = (graph, static, outputs)
        graph, static, outputs = self._graphs[key]
        for name, tensor in host.items():
            static[name].copy_(tensor, non_blocking=True)
        graph.replay()  # the captured kernels hold the static buffers' addresses; no rebinding needed
        return outputs


def _torch_dtype(trt, torch, dtype):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8, trt.int32: torch.int32,
             trt.bool: torch.bool, trt.uint8: torch.uint8}
    for name, value in (("bfloat16", torch.bfloat16), ("int64", torch.int64)):
        if hasattr(trt, name):  # TensorRT 10 has both; older bindings lack them
            table[getattr(trt, name)] = value
    if dtype not in table:
        raise CheckpointError(f"the engine has a tensor of type {dtype}, which latentforge cannot feed; "
                              "rebuild it from the exporter's ONNX graph")
    return table[dtype]
