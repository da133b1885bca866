"""The sidecar JSON beside every TensorRT plan `latentforge export --format tensorrt` writes, and its check.

A plan runs only on the TensorRT version and GPU model it was built for, and the runtime
never deserializes one it cannot vouch for: `verify_engine` refuses a plan whose sidecar
is missing, malformed, built by another TensorRT or for another GPU, or whose bytes hash
differently. Pure Python, so it is tested without TensorRT. After this check the runtime
deserializes with `engine_host_code_allowed = False`.

Sidecar `<engine>.plan.json`:
{"format": "latentforge-tensorrt/1", "tensorrt_version", "gpu_name", "compute_capability" ("9.0"),
 "flags": [...], "profile": {"min", "opt", "max"}, "sha256" (of the plan bytes),
 "input": {"name", "shape", "dtype"}, "output": {...}, "inputs": [...], "outputs": [...],
 "metadata": {the latentforge.* metadata of the ONNX, without the prefix}}
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from latentforge.errors import BackendUnavailable, CheckpointError

FORMAT = "latentforge-tensorrt/1"
REQUIRED = ("format", "tensorrt_version", "gpu_name", "compute_capability", "flags", "profile", "sha256",
            "input", "output", "metadata")
TEXT_FIELDS = ("format", "tensorrt_version", "gpu_name", "compute_capability", "sha256")


def sidecar_path(plan: str | os.PathLike) -> Path:
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def read_sidecar(plan: str | os.PathLike) -> dict:
    """The sidecar of `plan`, checked for shape but not yet against this machine."""
    if not Path(plan).is_file():
        raise CheckpointError(f"engine {str(plan)!r} does not exist; check the path")
    path = sidecar_path(plan)
    if not path.is_file():
        raise CheckpointError(f"{str(plan)!r} has no sidecar {path.name!r}; latentforge loads only engines it "
                              "built, so re-export with `latentforge export --format tensorrt`")
    try:
        sidecar = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({e}); re-export the engine") from None
    missing = [k for k in REQUIRED if not isinstance(sidecar, dict) or k not in sidecar]
    if missing:
        raise CheckpointError(f"{str(path)!r} lacks {', '.join(missing)}; re-export the engine")
    wrong = [k for k in TEXT_FIELDS if not isinstance(sidecar[k], str)]
    if not isinstance(sidecar["metadata"], dict):
        wrong.append("metadata")
    if wrong:
        raise CheckpointError(f"{str(path)!r} has malformed {', '.join(wrong)} (text expected, metadata an object); "
                              "re-export the engine")
    if sidecar["format"] != FORMAT:
        raise CheckpointError(f"{str(path)!r} has format {sidecar['format']!r}, this latentforge reads {FORMAT!r}; "
                              "re-export the engine")
    return sidecar


def verify_engine(plan: str | os.PathLike, tensorrt_version: str, gpu_name: str, compute_capability: str) -> dict:
    """The sidecar, if `plan` was built by this TensorRT for this GPU and its bytes are the ones built."""
    sidecar = read_sidecar(plan)
    rebuild = "rebuild it here with `latentforge export --format tensorrt`"
    if sidecar["tensorrt_version"] != tensorrt_version:
        raise BackendUnavailable(f"{str(plan)!r} was built by TensorRT {sidecar['tensorrt_version']}, "
                                 f"this is {tensorrt_version}; {rebuild}")
    if sidecar["gpu_name"] != gpu_name or sidecar["compute_capability"] != compute_capability:
        raise BackendUnavailable(f"{str(plan)!r} was built for {sidecar['gpu_name']} (compute "
                                 f"{sidecar['compute_capability']}), this GPU is {gpu_name} (compute "
                                 f"{compute_capability}); {rebuild}")
    digest = hashlib.sha256(Path(plan).read_bytes()).hexdigest()
    if digest != sidecar["sha256"]:
        raise CheckpointError(f"{str(plan)!r} does not match the sha256 in its sidecar (the plan was changed or "
                              f"damaged); {rebuild}")
    return sidecar


def this_machine() -> tuple[str, str, str]:
    """(TensorRT version, GPU name, compute capability like "9.0") here, as verify_engine compares them."""
    from .machine import cuda_reason, import_tensorrt

    trt = import_tensorrt()
    reason = cuda_reason()
    if reason:
        raise BackendUnavailable(f"the tensorrt backend needs a CUDA GPU: {reason}")
    import torch

    major, minor = torch.cuda.get_device_capability()
    return trt.__version__, torch.cuda.get_device_name(), f"{major}.{minor}"


def check_engine(plan: str | os.PathLike, machine: tuple[str, str, str] | None = None) -> dict:
    """The sidecar of `plan` once verified against `machine` (TensorRT version, GPU name, compute capability),
    by default this one's; the runtime calls it before TensorRT sees a byte of the plan."""
    return verify_engine(plan, *(machine or this_machine()))
