"""ONNX -> serialized TensorRT engine (`.plan`) with an optimization profile, precision flags, a timing cache
and the sidecar JSON the runtime checks before it loads the plan (runtime/engine_sidecar.py).

Written against the TensorRT Python API (10.x and 11.x): Builder, a strongly typed network from
OnnxParser, BuilderConfig, build_serialized_network. The precision lives in the ONNX graph it is
given (fp32, the fp16 graph with its fp32-kept layers, or the int8 QDQ graph), not in builder
flags: TensorRT 11 removed the FP16/INT8/BF16 flags and builds only strongly typed networks.
There is no bf16 graph to give it, so bf16 engines are refused. The engine is built without
VERSION_COMPATIBLE, so it holds no host code, and the runtime deserializes with
engine_host_code_allowed = False.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentforge.checkpoint import PREFIX as META
from latentforge.errors import BackendUnavailable, ExportError
from latentforge.files import atomic_write_bytes
from latentforge.runtime.engine_sidecar import FORMAT, sidecar_path
from latentforge.runtime.machine import import_tensorrt

from .graph import Part

INSTALL = 'pip install "latentforge[tensorrt]" on a machine with an NVIDIA GPU'
PRECISIONS = ("fp32", "fp16", "int8")
WORKSPACE = 1 << 30


def gpu() -> tuple[str, str]:
    """(name, compute capability like "9.0") of the current CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable(f"TensorRT needs a CUDA GPU and a CUDA build of torch, and this machine has "
                                 f"neither in reach; {INSTALL}")
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}.{minor}"


@dataclass
class Engine:
    plan: bytes
    sidecar: dict

    def write(self, out: str | os.PathLike) -> None:
        """The plan, then its sidecar; if the sidecar cannot be written the plan goes too."""
        out = Path(out)
        atomic_write_bytes(out, self.plan)
        try:
            atomic_write_bytes(sidecar_path(out), json.dumps(self.sidecar, indent=2).encode())
        except BaseException:
            out.unlink(missing_ok=True)
            raise


def profile_shapes(part: Part, batch: tuple[int, int, int]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """min/opt/max shape of every input: the batch dimension from `batch`, the rest from the part."""
    sample = part.make_inputs(1, 0)
    return {name: tuple(value.shape if name in part.fixed else (b, *value.shape[1:]) for b in batch)
            for name, value in sample.items()}


def _tensor_info(name: str, value: np.ndarray, fixed: bool) -> dict:
    return {"name": name, "shape": list(value.shape) if fixed else [-1, *value.shape[1:]], "dtype": str(value.dtype)}


def build_engine(onnx_bytes: bytes, part: Part, precision: str, batch: tuple[int, int, int], meta: dict[str, str],
                 timing_cache: str | os.PathLike | None = None) -> Engine:
    """`onnx_bytes` is the graph at `precision` already (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ExportError(f"TensorRT engines are built as fp32, fp16 or int8 here, not {precision}; "
                          "use --precision fp16 for a half-precision engine")
    trt = import_tensorrt()
    gpu_name, capability = gpu()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Required for the graph's own types to decide precision on 10.x; accepted and always on in 11.x.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT's ONNX parser rejected the {part.name} graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE)
    flags = ["STRONGLY_TYPED"]
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; fp32 means fp32 parity with PyTorch
        flags.append("NO_TF32")
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(part, batch).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else Path.home() / ".cache" / "latentforge" / \
        f"tensorrt-{trt.__version__}-{capability}.timing"
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT could not build a {precision} engine for the {part.name} "
                          f"(batch profile {batch}); see its log above")
    plan = bytes(plan)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))

    sample = part.make_inputs(1, 0)
    outputs = part.reference(sample)
    inputs = [_tensor_info(n, v, n in part.fixed) for n, v in sample.items()]
    outs = [_tensor_info(n, v, False) for n, v in outputs.items()]
    sidecar = {
        "format": FORMAT,
        "tensorrt_version": trt.__version__,
        "gpu_name": gpu_name,
        "compute_capability": capability,
        "flags": flags,
        "profile": dict(zip(("min", "opt", "max"), batch)),
        "sha256": hashlib.sha256(plan).hexdigest(),
        "input": inputs[0],
        "output": outs[0],
        "inputs": inputs,
        "outputs": outs,
        "metadata": {k[len(META):]: v for k, v in meta.items()},
    }
    return Engine(plan, sidecar)


def engine_runner(plan: bytes):
    """feed {name: ndarray} -> {name: ndarray} through the engine, buffers in torch CUDA tensors."""
    import torch

    trt = import_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    runtime.engine_host_code_allowed = False
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ExportError("TensorRT could not deserialize the engine it just built")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = []
        for name, value in feed.items():
            tensor = torch.from_numpy(np.ascontiguousarray(value)).cuda()
            keep.append(tensor)
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        result = {}
        for name in outputs:
            dtype = torch.from_numpy(np.empty(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
            result[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            context.set_tensor_address(name, result[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT failed to run the engine on the parity inputs")
        stream.synchronize()
        return {name: t.cpu().numpy() for name, t in result.items()}

    return run
