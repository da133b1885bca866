"""Building the native library of latentforge's fused ops (csrc/) with torch.utils.cpp_extension.

The library is compiled on first use and cached under a hash of everything that decides the binary: the
sources (and where they are installed), the flags, the torch version, the CPU's feature flags (it is built with
-march=native) and whether the CUDA kernels are in. A second process, or a second run, only loads it.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import BackendUnavailable
from .runtime.machine import cpu_flags

LIBRARY = "latentforge_ops"
CPU_SOURCES = ("ops.cpp",)
CUDA_SOURCES = ("ops_cuda.cu",)
HEADERS = ("latentforge_ops.h",)
# -march=native: AVX2/FMA (or AVX-512 where present) for the vectorized loops; the CPU flags are in the cache
# key, so a library is never loaded on a CPU it was not built for. -fopenmp: at::parallel_for is an inline
# OpenMP loop in ATen's headers, serial without it; libgomp then resolves to the one torch already loaded.
CFLAGS = ("-O3", "-march=native", "-fopenmp")
LDFLAGS = ("-fopenmp",)
CUDA_FLAGS = ("-O3", "--use_fast_math")


@dataclass(frozen=True)
class BuildInfo:
    path: Path       # the shared library that was loaded
    seconds: float   # compile (or, when cached, load) time
    cuda: bool       # CUDA kernels included
    cached: bool     # found built already


def source_dir() -> Path:
    """csrc/ as installed: package data `latentforge.csrc`, in an editable and in a regular install alike."""
    return Path(str(importlib.resources.files("latentforge.csrc")))


def _want_cuda() -> bool:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return bool(torch.cuda.is_available() and CUDA_HOME)


def cache_key(cuda: bool) -> str:
    import torch

    h = hashlib.sha256()
    root = source_dir()
    for name in CPU_SOURCES + HEADERS + (CUDA_SOURCES if cuda else ()):
        h.update(name.encode() + b"\0" + (root / name).read_bytes())
    # The sources' folder too: ninja rebuilds when the paths in its build file change, so two installs sharing one
    # build folder would recompile each other's library back and forth.
    h.update(repr((str(root), CFLAGS, LDFLAGS, CUDA_FLAGS, cuda, torch.__version__, cpu_flags())).encode())
    return h.hexdigest()[:16]


def build_dir(key: str) -> Path:
    """TORCH_EXTENSIONS_DIR/latentforge-ops-KEY when that is set (as torch's own extensions), else
    ~/.cache/latentforge/ops-KEY."""
    base = os.environ.get("TORCH_EXTENSIONS_DIR")
    if base:
        return Path(base) / f"latentforge-ops-{key}"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latentforge" / f"ops-{key}"


def _check_tools(cuda: bool) -> None:
    from torch.utils.cpp_extension import is_ninja_available

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise BackendUnavailable(f"no C++ compiler {compiler!r} on PATH; install g++ (or set CXX) to build them")
    if not is_ninja_available():
        raise BackendUnavailable("ninja is not installed; `pip install ninja` to build them")
    if cuda and shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"):
        raise BackendUnavailable("CUDA is available but nvcc is not on PATH; install the CUDA toolkit or set CUDA_HOME")


@contextmanager
def _build_lock(out: Path):
    """Hold an flock on OUT/build.flock around torch's build. torch marks a build in progress with a plain file,
    OUT/lock, and every later process waits for it to go away, forever: a build killed half-way (kill -9, a
    closed terminal) left one behind, and each later use of the ops hung (found by fuzzing, which kills its
    worker on a hang). The flock dies with its process, so whoever holds it knows no other latentforge
    process is building here, and a torch lock file still present is stale: it is removed."""
    import fcntl

    with open(out / "build.flock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (out / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(verbose: bool = False) -> BuildInfo:
    """Compile (or find compiled) and load the native library into this process; torch.ops.latentforge.* then
    has CPU (and, with CUDA, CUDA) kernels. Raises BackendUnavailable with the reason when it cannot."""
    from torch.utils import cpp_extension

    cuda = _want_cuda()
    _check_tools(cuda)
    root = source_dir()
    key = cache_key(cuda)
    out = build_dir(key)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{LIBRARY}_{key}"
    cached = (out / f"{name}.so").exists()
    sources = [str(root / s) for s in CPU_SOURCES + (CUDA_SOURCES if cuda else ())]
    if not cached and not verbose:  # else the first use of the ops sits silent for a minute
        print(f"latentforge: compiling the fused ops into {out} (once per machine and version)", file=sys.stderr)
    start = time.perf_counter()
    try:
        with _build_lock(out):
            path = cpp_extension.load(name=name, sources=sources, extra_include_paths=[str(root)],
                                      extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                                      extra_cuda_cflags=list(CUDA_FLAGS), build_directory=str(out),
                                      is_python_module=False, verbose=verbose)
    except Exception as e:  # a compiler error, a linker error, a failed load: all mean "no native ops"
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        raise BackendUnavailable(f"compiling csrc/ in {out} failed: {lines[-1] if lines else type(e).__name__}"
                                 "; run `latentforge build-ops` to see the compiler's output") from e
    return BuildInfo(Path(path if path else out / f"{name}.so"), time.perf_counter() - start, cuda, cached)
