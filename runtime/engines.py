"""The engines a decode benchmark compares: latentforge's backends and the peers a user would write by hand.

Peers: plain torch eager, torch.compile, torch bf16 autocast + channels_last, a default onnxruntime session,
OpenVINO compiled with the f32 and with the bf16 precision hint. The bf16 peers run only where the CPU has bf16
units (runtime/machine.py): elsewhere bf16 is emulated, hundreds of times slower, and would not finish.

Each engine is a callable on a prepared input (prepared once, outside the timing), returning the
float image [N, C, H, W]. Shared by `bench.run_bench` and the pytest-benchmark suite.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .artifact import is_onnx
from .flops import count_flops_onnx, count_flops_torch
from .loading import load
from .machine import Hardware, hardware, installed

LATENTFORGE_ORT = "latentforge onnxruntime"
LATENTFORGE_TORCH = "latentforge torch"
LATENTFORGE_AUTO = "latentforge auto"
ORT_DEFAULT = "onnxruntime default"
EAGER = "torch eager"
TORCH_BF16 = "torch bf16 channels_last"
OV_F32 = "openvino f32"
OV_BF16 = "openvino bf16"
COMPILE = "torch.compile"
ENGINES = (LATENTFORGE_AUTO, LATENTFORGE_ORT, LATENTFORGE_TORCH, ORT_DEFAULT, EAGER, TORCH_BF16, OV_F32, OV_BF16,
           COMPILE)
NEEDS_CHECKPOINT = "needs the checkpoint (an .onnx holds no nn.Module)"
NO_BF16_UNITS = "no bf16 units on this CPU (AVX512_BF16/AMX): bf16 would be emulated, far slower than fp32"


@dataclass
class Engine:
    name: str
    threads: str
    run: Callable          # prepared input -> float image [N, C, H, W]
    prepare: Callable = np.asarray  # z float32 [N, D] -> the engine's input, built before timing


def latentforge_engine(name: str, model) -> Engine:
    """What a user of `latentforge.load` calls: validation and all."""
    return Engine(name, str(model.threads), model.decode_float)


def ort_default_engine(source: str | Path | bytes) -> Engine:
    """A default InferenceSession, as in onnxruntime's README: no options but the CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(source if isinstance(source, bytes) else str(source),
                                   providers=["CPUExecutionProvider"])
    return Engine(ORT_DEFAULT, "default", lambda z: session.run(None, {"z": z})[0])


def torch_engine(name: str, decode: Callable) -> Engine:
    """`decode` called directly on a tensor under inference_mode, with torch's default thread count."""
    import torch

    def run(z):
        with torch.inference_mode():
            return decode(z)

    return Engine(name, f"default ({torch.get_num_threads()})", run, torch.from_numpy)


def openvino_engine(name: str, source: str | Path | bytes, hint: str) -> Engine:
    """OpenVINO as its docs show it: compile_model on the CPU with one precision hint, call the compiled model."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(source if isinstance(source, bytes) else str(source)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": hint})
    return Engine(name, "default", lambda z: compiled({"z": z})[0])


def torch_bf16_engine(module) -> Engine:
    """The module in channels_last under bf16 autocast: PyTorch's own recipe for CPUs with bf16 units."""
    import torch

    module = module.to(memory_format=torch.channels_last)

    def decode(z):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return module.decode(z).float()

    return torch_engine(TORCH_BF16, decode)


def _openvino_peers(source, facts: Hardware, engines: list[Engine], skipped: dict[str, str]) -> None:
    if not installed("openvino"):
        skipped.update({OV_F32: "openvino is not installed", OV_BF16: "openvino is not installed"})
        return
    engines.append(openvino_engine(OV_F32, source, "f32"))
    if facts.bf16_units:
        engines.append(openvino_engine(OV_BF16, source, "bf16"))
    else:
        skipped[OV_BF16] = NO_BF16_UNITS


def make_engines(path: str | os.PathLike, threads: int | None = None, compile: bool = True,
                 facts: Hardware | None = None) -> tuple[list[Engine], dict[str, str], dict]:
    """(engines, {skipped engine: why}, model description) for the checkpoint or `.onnx` at `path`."""
    path = Path(path)
    facts = facts or hardware()
    auto = load(path, threads=threads)
    if is_onnx(path):
        model = load(path, "onnxruntime", threads)
        engines = [latentforge_engine(LATENTFORGE_AUTO, auto), latentforge_engine(LATENTFORGE_ORT, model),
                   ort_default_engine(path)]
        skipped = {name: NEEDS_CHECKPOINT for name in (LATENTFORGE_TORCH, EAGER, TORCH_BF16, COMPILE)}
        _openvino_peers(path, facts, engines, skipped)
        return engines, skipped, describe(model, count_flops_onnx(path), "the ONNX graph's shapes", auto)

    from latentforge.checkpoint import load_checkpoint

    on_ort = load(path, "onnxruntime", threads)
    on_torch = load(path, "torch", threads)
    eager, _ = load_checkpoint(path)
    flops = count_flops_torch(eager, on_torch.latent_dim)
    engines = [latentforge_engine(LATENTFORGE_AUTO, auto), latentforge_engine(LATENTFORGE_ORT, on_ort),
               latentforge_engine(LATENTFORGE_TORCH, on_torch),
               ort_default_engine(on_ort.onnx_source),  # the graph `load` exported in memory, not exported twice
               torch_engine(EAGER, eager.decode)]
    skipped = {}
    if facts.bf16_units:
        engines.append(torch_bf16_engine(load_checkpoint(path)[0]))
    else:
        skipped[TORCH_BF16] = NO_BF16_UNITS
    _openvino_peers(on_ort.onnx_source, facts, engines, skipped)
    if compile:
        import torch

        compiled, _ = load_checkpoint(path)
        engines.append(torch_engine(COMPILE, torch.compile(compiled.decode)))
    else:
        skipped[COMPILE] = "left out (compile=False)"
    return engines, skipped, describe(on_torch, flops, "forward hooks on the nn.Module", auto)


def describe(model, flops_per_image: int, flops_source: str, auto=None) -> dict:
    return {"path": str(model.path), "format": "onnx" if is_onnx(model.path) else "checkpoint",
            "auto": f"{auto.backend} {auto.precision}: {auto.chosen_because}" if auto is not None else "",
            "kind": model.kind, "latent_dim": model.latent_dim, "image_shape": list(model.image_shape),
            "value_range": list(model.value_range), "flops_per_image": flops_per_image,
            "flops_source": flops_source}
