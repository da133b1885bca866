"""Which backends exist here, which one `auto` picks without a tuning record, and where a precision variant lives.

`backends()` answers without importing torch or building anything, so `latentforge backends`
is instant. With a tuning record (runtime/tune.py) `auto` runs what was measured fastest on this
machine; without one it follows `default_backend`, decided from the hardware facts of
runtime/machine.py and measured on the 64 px faces VAE decoder at batch 1 (benchmarks/results/):
a `.plan` runs on TensorRT; an `.onnx` on onnxruntime (CPU: 0.33 ms against 0.74 ms on OpenVINO on an
AVX-512-BF16 EPYC, 0.5 against 0.9 ms per filter step on an AVX2 one; GPU: its CUDA provider), then
OpenVINO; a checkpoint on torch (loads in 0.1-0.2 s where onnxruntime first needs a 2-4 s export in
memory; on a GPU its decode replays CUDA graphs). Precision stays fp32: bf16 or int8 only after `tune`
has checked them against fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from latentforge.checkpoint import PREFIX as META
from latentforge.errors import BackendUnavailable, CheckpointError, InputError

from .machine import Hardware, hardware, installed

NAMES = ("onnxruntime", "openvino", "tensorrt", "torch")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# what the torch backend runs: latentforge's fused ops, the model's own decode (channels_last, autocast at bf16),
# or that decode under torch.compile (runtime/torch_backend.py)
TORCH_MODES = ("fused", "plain", "compile")
# how an onnxruntime session is set up beside its defaults ("fused"): one intra-op thread, or its pool not
# spinning between runs (runtime/ort_backend.session_options); tune times them, the record keeps the fastest
ORT_MODES = ("1thread", "nospin")
ENGINE_MODES = (*TORCH_MODES, "nncf", *ORT_MODES)   # nncf: OpenVINO int8 quantized by NNCF (runtime/ov_int8.py)
PLAN_SUFFIX = ".plan"
INSTALL = {"onnxruntime": 'pip install "latentforge[cpu]" (or [gpu])', "openvino": 'pip install "latentforge[openvino]"',
           "tensorrt": 'pip install "latentforge[tensorrt]"', "torch": "pip install torch"}


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    reason: str

    def __iter__(self):  # unpacks as (name, available, reason)
        return iter((self.name, self.available, self.reason))

    def line(self) -> str:
        return f"{self.name}: {'available' if self.available else 'unavailable'} — {self.reason}"


def backend_status(name: str) -> BackendStatus:
    if name not in NAMES:
        raise InputError(f"backend must be one of {', '.join(map(repr, NAMES))}, got {name!r}")
    if not installed(name):
        return BackendStatus(name, False, f"not installed — {INSTALL[name]}")
    if name == "onnxruntime":
        from .ort_backend import providers

        return BackendStatus(name, True, "providers " + ", ".join(providers()))
    if name == "openvino":
        bf16 = "bf16 native" if hardware().bf16_units else "no bf16 units on this CPU: a bf16 hint compiles f32"
        return BackendStatus(name, True, f"CPU plugin; {bf16}")
    if name == "tensorrt":
        from .machine import cuda_reason

        reason = cuda_reason()
        return BackendStatus(name, reason is None, reason or "CUDA device present")
    return BackendStatus(name, True, "checkpoints (.safetensors) only")


def backend_status_or_raise(name: str) -> None:
    status = backend_status(name)
    if not status.available:
        raise BackendUnavailable(f"backend {name!r} is unavailable: {status.reason}")


def backends() -> list[BackendStatus]:
    """Every backend, available or not and why, e.g. tensorrt: not installed — pip install "latentforge[tensorrt]"."""
    return [backend_status(name) for name in NAMES]


def is_plan(path: Path) -> bool:
    return path.suffix.lower() == PLAN_SUFFIX


def default_backend(path: Path, is_onnx: bool, facts: Hardware | None = None) -> tuple[str, str]:
    """(backend, why) that `auto` means for this artifact when no tuning record applies (the rule above)."""
    facts = facts or hardware()
    where = f"GPU {facts.gpus[0]}" if facts.gpus else f"CPU {facts.cpu}"
    untuned = "no tuning record (run `latentforge tune` to measure)"
    if is_plan(path):
        return "tensorrt", "a TensorRT engine runs only on TensorRT"
    if not is_onnx:
        if facts.gpu:
            return "torch", f"{untuned}; a checkpoint on the {where} runs on torch with CUDA graphs"
        return "torch", (f"{untuned}; a checkpoint on the {where} runs on torch fp32 (loads in 0.1-0.2 s; "
                         "onnxruntime would first export it, 2-4 s)")
    for name in ("onnxruntime", "openvino"):
        if installed(name):
            return name, f"{untuned}; an .onnx on the {where} runs on {name} fp32 (the fastest at batch 1 measured)"
    raise BackendUnavailable(f"{str(path)!r} needs onnxruntime or openvino; {INSTALL['onnxruntime']}")


def variant_path(path: Path, precision: str) -> Path:
    """`faces.onnx` + fp16 -> the exporter's gated variant `faces.fp16.onnx`, or an error naming the command."""
    if precision == "fp32":
        return path
    variant = path.with_name(f"{path.stem}.{precision}{path.suffix}")
    if not variant.exists():
        raise CheckpointError(f"precision {precision!r} loads the variant {str(variant)!r}, which does not exist; "
                              f"make it with `latentforge export CHECKPOINT --precision {precision} -o {variant}` "
                              f"(adding the --part that {path.name} holds if it is not the decoder)")
    return variant


def check_variant(metadata: dict[str, str], path: Path, precision: str) -> None:
    """A variant must say in its metadata that it is the precision it is named for."""
    found = metadata.get(META + "precision", "fp32")
    if found != precision:
        raise CheckpointError(f"{str(path)!r} is named as a {precision} variant but its metadata says "
                              f"latentforge.precision={found!r}; re-export it with --precision {precision}")
