"""The torch backend: a checkpoint's decoder on latentforge's fused ops (runtime/fused.py), under inference_mode.

Imported only for checkpoints, so running an `.onnx` never loads torch. On a CUDA device each batch size's
decode is captured once as a CUDA graph and replayed, so a batch-1 frame costs one launch, not one per layer.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from latentforge.errors import InputError

from .backends import TORCH_MODES as MODES
from .fused import PlainDecoder, fused_or_plain

NAME = "torch"
PRECISIONS = ("fp32", "bf16")
COMPILE_BACKEND = "inductor"   # tests swap in "eager": the same dynamo tracing, without minutes of C++ builds


@contextmanager
def thread_count(threads: int | None):
    """Use `threads` intra-op threads inside the block and restore the caller's count after it,
    so one model's setting never leaks into another (or into a benchmark's default-threads peer)."""
    if threads is None or threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _tensor(x: np.ndarray) -> torch.Tensor:
    """Share the array's memory; copy only a read-only one, which torch.from_numpy would warn about."""
    return torch.from_numpy(x if x.flags.writeable else x.copy())


class CudaGraphs:
    """One captured CUDA graph per (function, batch size): static input and output buffers, replayed per call."""

    WARMUP = 3  # eager runs on a side stream before capture, so lazy initialisation (cuDNN plans) is not captured

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.graphs: dict[tuple[str, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def run(self, name: str, fn, z: torch.Tensor) -> torch.Tensor:
        key = (name, z.shape[0])
        if key not in self.graphs:
            static_in = z.to(self.device, copy=True)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    fn(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = fn(static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(z)
        graph.replay()
        return static_out


class TorchDecoder:
    """z float32 [N, D] -> image float32 [N, C, H, W] (call) or uint8 [N, H, W, C] (`images`); also the VAE
    encoder, which only a checkpoint has.

    precision "bf16" runs the convolutions under bf16 autocast (the head and the uint8 conversion stay fp32):
    fast on CPUs with AMX or AVX-512-BF16 and on GPUs; on other CPUs torch emulates bf16 and it is slower.
    `mode` (MODES) is what runs: the fused ops, the plain module, or the plain module under torch.compile
    (`latentforge tune` times all three and keeps the fastest that passes its gate).
    """

    name = NAME
    source = None  # no ONNX graph: the module itself runs

    def __init__(self, model: torch.nn.Module, threads: int | None = None, precision: str = "fp32",
                 device: str | torch.device | None = None, value_range: tuple[float, float] = (0.0, 1.0),
                 mode: str = "fused", background: bool = False) -> None:
        """`background` (mode "compile"): calls run the plain module, uncompiled, while the first call's batch
        compiles on a thread of its own, and the compiled code from then on (`wait_compiled`), so a record's
        compile winner gives its first image in milliseconds, not the 5-60 s inductor takes on 2 cores."""
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        self.mode = mode
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = precision
        # channels_last runs the transposed convolutions on oneDNN's NHWC kernels: measured 1.3-1.5x faster than
        # NCHW for the 64px VAE at batch 1..128 on this 2-core CPU. Converts `model` in place: it is ours now.
        self.module = model.eval().to(self.device, memory_format=torch.channels_last)
        runner = fused_or_plain(self.module, value_range) if mode == "fused" else PlainDecoder(self.module, value_range)
        self.fused = runner.eval().to(self.device, memory_format=torch.channels_last)
        # in the background even torch.compile's wrapper is made on the side: importing dynamo takes ~2 s
        self._compiled = torch.compile(self.fused, backend=COMPILE_BACKEND) if mode == "compile" and not background \
            else None
        self._forward = self._compiled if mode == "compile" and not background else self.fused
        self._compiling: threading.Thread | None = None if background and mode == "compile" else False
        self._start = threading.Lock()
        self.threads = threads or torch.get_num_threads()
        self._threads = threads
        # torch.compile keeps its own graphs; capturing its calls in ours would record its guards, not the kernels
        self._graphs = CudaGraphs(self.device) if self.device.type == "cuda" and mode != "compile" else None

    def _autocast(self):
        if self.precision == "bf16":
            # No cast cache: a CUDA graph must not capture casts cached from outside it (torch.cuda.graph's docs).
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False)
        if self.device.type == "cuda":  # cuDNN would run fp32 convolutions in TF32 by default: 1e-3, not 1e-5
            cudnn = torch.backends.cudnn
            return cudnn.flags(enabled=True, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                               allow_tf32=False)
        return nullcontext()

    def _float(self, z: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self._forward(z).float()

    def _images(self, z: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.fused.to_images(self._forward(z))

    def _checked_images(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            y = self._forward(z)
            # NaN and Inf propagate into the sum; a finite image whose sum overflows only costs the guarded retry
            return self.fused.to_images(y), torch.isfinite(y.float().sum())

    def _compile_on_the_side(self, z: torch.Tensor) -> None:
        def compile_once():
            try:
                compiled = torch.compile(self.fused, backend=COMPILE_BACKEND)
                with thread_count(self._threads), torch.inference_mode(), self._autocast():
                    compiled(z)
            except Exception:  # noqa: BLE001 - a module inductor cannot build stays on the plain module
                return
            self._compiled = self._forward = compiled

        self._compiling = threading.Thread(target=compile_once, name="latentforge-compile", daemon=True)
        self._compiling.start()

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Wait for a background compile; whether the compiled code is what runs now."""
        if self._compiling:
            self._compiling.join(timeout)
        return self._compiled is not None and self._forward is self._compiled

    def _run(self, name: str, fn, z: np.ndarray):
        with thread_count(self._threads), torch.inference_mode():
            zt = _tensor(z)
            if self._compiling is None:
                with self._start:
                    if self._compiling is None:
                        self._compile_on_the_side(zt.to(self.device).clone())
            out = self._graphs.run(name, fn, zt) if self._graphs else fn(zt.to(self.device))
            if isinstance(out, tuple):
                return tuple(t.contiguous().cpu().numpy() for t in out)
            return out.contiguous().cpu().numpy()

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self._run("float", self._float, z)

    def images(self, z: np.ndarray) -> np.ndarray:
        return self._run("images", self._images, z)

    def checked_images(self, z: np.ndarray) -> tuple[np.ndarray, bool]:
        """(`images(z)`, whether the float image they came from was finite): the NaN guard's view of the fused
        uint8 path, whose conversion writes NaN as 0."""
        images, finite = self._run("checked_images", self._checked_images, z)
        return images, bool(finite)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x float32 [N, C, H, W] in the value range -> (mu, logvar) float32 [N, D]."""
        with thread_count(self._threads), torch.inference_mode():
            mu, logvar = self.module.encode(_tensor(x).to(self.device))
            return mu.contiguous().cpu().numpy(), logvar.contiguous().cpu().numpy()


def checkpoint_to_onnx_bytes(model: torch.nn.Module, info) -> bytes:
    """Export a checkpoint's decoder in memory, with the metadata and the parity check `latentforge export` has."""
    from latentforge.export.graph import checked_graph
    from latentforge.export.parts import build_part
    from latentforge.export.source import source_of

    return checked_graph(build_part(source_of(model, info), "decoder"),
                         f"the in-memory ONNX graph of {str(info.path)!r}", remedy="use backend='torch'")
