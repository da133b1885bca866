"""The engines a decode benchmark compares: latentforge's backends and the peers a user would write by hand.

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

LATENTFORGE_ORT = "latentforge onnxruntime"
LATENTFORGE_TORCH = "latentforge torch"
ORT_DEFAULT = "onnxruntime default"
EAGER = "torch eager"
COMPILE = "torch.compile"
ENGINES = (LATENTFORGE_ORT, LATENTFORGE_TORCH, ORT_DEFAULT, EAGER, COMPILE)
NEEDS_CHECKPOINT = "needs the checkpoint (an .onnx holds no nn.Module)"


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


def make_engines(path: str | os.PathLike, threads: int | None = None,
                 compile: bool = True) -> tuple[list[Engine], dict[str, str], dict]:
    """(engines, {skipped engine: why}, model description) for the checkpoint or `.onnx` at `path`."""
    path = Path(path)
    if is_onnx(path):
        model = load(path, "onnxruntime", threads)
        engines = [latentforge_engine(LATENTFORGE_ORT, model), ort_default_engine(path)]
        skipped = {name: NEEDS_CHECKPOINT for name in (LATENTFORGE_TORCH, EAGER, COMPILE)}
        return engines, skipped, describe(model, count_flops_onnx(path), "the ONNX graph's shapes")

    from latentforge.checkpoint import load_checkpoint

    on_ort = load(path, "onnxruntime", threads)
    on_torch = load(path, "torch", threads)
    eager, _ = load_checkpoint(path)
    flops = count_flops_torch(eager, on_torch.latent_dim)
    engines = [latentforge_engine(LATENTFORGE_ORT, on_ort), latentforge_engine(LATENTFORGE_TORCH, on_torch),
               ort_default_engine(on_ort.onnx_source),  # the graph `load` exported in memory, not exported twice
               torch_engine(EAGER, eager.decode)]
    skipped = {}
    if compile:
        import torch

        compiled, _ = load_checkpoint(path)
        engines.append(torch_engine(COMPILE, torch.compile(compiled.decode)))
    else:
        skipped[COMPILE] = "left out (compile=False)"
    return engines, skipped, describe(on_torch, flops, "forward hooks on the nn.Module")


def describe(model, flops_per_image: int, flops_source: str) -> dict:
    return {"path": str(model.path), "format": "onnx" if is_onnx(model.path) else "checkpoint",
            "kind": model.kind, "latent_dim": model.latent_dim, "image_shape": list(model.image_shape),
            "value_range": list(model.value_range), "flops_per_image": flops_per_image,
            "flops_source": flops_source}
