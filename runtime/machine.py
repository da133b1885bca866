"""The machine a model runs on: physical cores, CPU model and features, GPU, installed libraries, matmul ceilings.

Every hardware-dependent decision reads `hardware()`, one frozen `Hardware` read once per process, so a
test can hand any decision a faked one (an AVX2-only EPYC, a Xeon with AMX) on whatever machine it runs.
"""
from __future__ import annotations

import datetime
import functools
import glob
import importlib.util
import os
import platform
import re
import sys
import time
from dataclasses import dataclass

import numpy as np

from latentforge.errors import BackendUnavailable

CPUINFO = "/proc/cpuinfo"
# Features that decide which kernels a CPU backend can use; reported so a reader can tell AVX2 from AMX numbers.
FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")
NVIDIA_GPUS = "/proc/driver/nvidia/gpus/*/information"


def _cpuinfo_records() -> list[dict[str, str]]:
    try:
        with open(CPUINFO) as f:
            text = f.read()
    except OSError:
        return []
    records = []
    for block in text.strip().split("\n\n"):
        record = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            record[key.strip()] = value.strip()
        records.append(record)
    return records


def physical_cores() -> int:
    """Distinct (package, core) pairs: SMT siblings share one core's FMA units, so more threads only contend."""
    records = _cpuinfo_records()
    cores = len({(r.get("physical id"), r.get("core id")) for r in records if "core id" in r}) or os.cpu_count() or 1
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return max(1, min(cores, allowed))  # a container or taskset may allow fewer CPUs than the machine has


def cpu_model() -> str:
    for record in _cpuinfo_records():
        if "model name" in record:
            return record["model name"]
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The kernel's whole flags line (ARM: "Features"), as the fused ops' build cache key wants it."""
    records = _cpuinfo_records()
    return (records[0].get("flags") or records[0].get("Features", "")) if records else ""


def cpu_features() -> list[str]:
    flags = set(cpu_flags().split())
    return [f for f in FEATURES if f in flags]


def gpu_names() -> tuple[str, ...]:
    """NVIDIA GPUs the driver lists, read without importing torch or CUDA (so an `.onnx` load stays light)."""
    names = []
    for info in sorted(glob.glob(NVIDIA_GPUS)):
        try:
            with open(info) as f:
                names += [line.partition(":")[2].strip() for line in f if line.startswith("Model:")]
        except OSError:
            continue
    return tuple(names)


def cuda_capability() -> tuple[int, int] | None:
    """The first CUDA device's compute capability when torch is already imported and sees one; else None.
    Never imports torch itself: the `.onnx` path must not pay for it."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(0))


@dataclass(frozen=True)
class Hardware:
    """The facts hardware-dependent decisions are made from."""

    cpu: str
    features: frozenset[str]          # the members of FEATURES this CPU reports
    physical_cores: int
    gpus: tuple[str, ...] = ()        # NVIDIA models the driver lists
    cuda_capability: tuple[int, int] | None = None

    @property
    def bf16_units(self) -> bool:
        """bf16 dot products in hardware (AVX512_BF16 or AMX): without them torch and OpenVINO emulate bf16
        at ~1 GFLOP/s, hundreds of times slower than fp32, so no bf16 candidate is worth timing."""
        return bool(self.features & {"avx512_bf16", "amx_bf16"})

    @property
    def int8_units(self) -> bool:
        return bool(self.features & {"avx512_vnni", "avx_vnni", "amx_int8"})

    @property
    def amx(self) -> bool:
        return bool(self.features & {"amx_bf16", "amx_int8"})

    @property
    def gpu(self) -> bool:
        return bool(self.gpus) or self.cuda_capability is not None

    @property
    def kind(self) -> str:
        """The machine kind results files are named by, e.g. "amd-epyc-avx2": the CPU model and its matrix tier,
        so that two CPUs of one name with different units keep separate files."""
        tier = "amx" if self.amx else "avx512bf16" if self.bf16_units else "avx2"
        return re.sub(r"[^a-z0-9]+", "-", self.cpu.lower()).strip("-") + "-" + tier

    def summary(self) -> str:
        isa = " ".join(sorted(self.features)) or "no listed ISA extensions"
        gpu = f"; GPU {', '.join(self.gpus)}" if self.gpus else ""
        cc = f" (compute capability {self.cuda_capability[0]}.{self.cuda_capability[1]})" if self.cuda_capability \
            else ""
        return f"{self.cpu}, {self.physical_cores} physical cores, {isa}{gpu}{cc}"


@functools.lru_cache(maxsize=1)
def _cpu_hardware() -> Hardware:
    return Hardware(cpu_model(), frozenset(cpu_features()), physical_cores(), gpu_names())


def hardware() -> Hardware:
    """This machine's facts; the CPU part is read once, the CUDA capability whenever torch has been imported."""
    cpu = _cpu_hardware()
    capability = cuda_capability()
    if capability is None:
        return cpu
    return Hardware(cpu.cpu, cpu.features, cpu.physical_cores, cpu.gpus, capability)


def installed(module: str) -> bool:
    """Whether `module` can be imported here, without importing it."""
    if module in sys.modules:  # imported already, or blocked with None
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def versions() -> dict[str, str]:
    """Versions of what the benchmark can touch; a library that is not installed is left out, not imported by force."""
    import importlib.metadata as md

    found = {"python": platform.python_version()}
    for dist in ("numpy", "onnxruntime", "torch", "latentforge"):
        try:
            found[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return found


def machine_info() -> dict:
    return {
        "cpu": cpu_model(),
        "features": cpu_features(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "platform": platform.platform(),
        "versions": versions(),
        "load_average_1min": os.getloadavg()[0],  # other processes' load: timings under load are not comparable
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def matmul_ceiling(dtype: str = "float32", seconds: float = 0.5) -> dict:
    """Best GFLOP/s of a square matmul (2 n^3 FLOP) in `dtype`, with torch when installed (it has the bf16
    kernels the engines would use), numpy otherwise.

    n doubles from 256 while one call stays under 0.25 s, up to 2048: big enough to reach the FMA peak on a
    fast path (fp32 gets to 2048), small enough that a CPU without bf16 units (emulated, < 1 GFLOP/s) answers
    within a second or two.
    """
    try:
        import torch
    except ImportError:
        torch = None
    if dtype != "float32" and torch is None:
        raise ValueError(f"a {dtype} ceiling needs torch")
    if torch is not None:
        rng = torch.Generator().manual_seed(0)

        def make(n):
            a, b = (torch.randn(n, n, generator=rng).to(getattr(torch, dtype)) for _ in range(2))
            return lambda: torch.mm(a, b)
        library = "torch.mm"
    else:
        rng = np.random.default_rng(0)

        def make(n):
            a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
            return lambda: a @ b
        library = "numpy matmul"

    def once(run) -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    n, run = 256, make(256)
    once(run)  # warm-up: first-touch pages, kernel selection, thread pool start
    while n < 2048 and once(run) < 0.25:
        n, run = 2 * n, make(2 * n)
        once(run)
    best = once(run)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        best = min(best, once(run))
    return {"dtype": dtype, "n": n, "gflops": 2 * n**3 / best / 1e9, "library": library}


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable('tensorrt is not installed; pip install "latentforge[tensorrt]" '
                                'on a machine with an NVIDIA GPU') from None
    return tensorrt


def cuda_reason() -> str | None:
    """Why torch cannot drive a CUDA device here, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA device visible to torch {torch.__version__}"
    return None
