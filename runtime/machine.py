"""The machine a model runs on: physical cores, CPU model and features, installed libraries, matmul ceilings."""
from __future__ import annotations

import datetime
import importlib.util
import os
import platform
import sys
import time

import numpy as np

CPUINFO = "/proc/cpuinfo"
# Features that decide which kernels a CPU backend can use; reported so a reader can tell AVX2 from AMX numbers.
FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


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


def cpu_features() -> list[str]:
    records = _cpuinfo_records()
    flags = set(records[0].get("flags", "").split()) if records else set()
    return [f for f in FEATURES if f in flags]


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
