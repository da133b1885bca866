"""The machine a model runs on: physical cores, CPU model and features, library versions, matmul ceilings."""
from __future__ import annotations

import datetime
import os
import platform
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
    cores = {(r.get("physical id"), r.get("core id")) for r in records if "core id" in r}
    return len(cores) or os.cpu_count() or 1


def cpu_model() -> str:
    for record in _cpuinfo_records():
        if "model name" in record:
            return record["model name"]
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    records = _cpuinfo_records()
    flags = set(records[0].get("flags", "").split()) if records else set()
    return [f for f in FEATURES if f in flags]


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
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def matmul_ceiling(dtype: str = "float32", seconds: float = 0.5) -> dict:
    """Best GFLOP/s of a square matmul (2 n^3 FLOP) in `dtype`, with torch when installed (it has the bf16
    kernels the engines use), numpy otherwise. 2048^2 unless one 1024^2 call is already slow (emulated bf16)."""
    try:
        import torch
    except ImportError:
        torch = None
    if dtype != "float32" and torch is None:
        raise ValueError(f"a {dtype} ceiling needs torch")
    if torch is not None:
        rng = torch.Generator().manual_seed(0)

        def make(n):
            a = torch.randn(n, n, generator=rng).to(getattr(torch, dtype))
            b = torch.randn(n, n, generator=rng).to(getattr(torch, dtype))
            return lambda: torch.mm(a, b)
        library = f"torch {torch.__version__} torch.mm"
    else:
        rng = np.random.default_rng(0)

        def make(n):
            a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
            return lambda: a @ b
        library = f"numpy {np.__version__} matmul"

    n = 1024
    run = make(n)
    start = time.perf_counter()
    run()
    if time.perf_counter() - start < 0.05:
        n = 2048
        run = make(n)
        run()  # warm-up: first-touch pages and kernel selection
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return {"dtype": dtype, "n": n, "gflops": 2 * n**3 / best / 1e9, "library": library}
