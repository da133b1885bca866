"""The GPU half of benchmarks/gpu_suite.sh: a small driver for compute-sanitizer, and the GPU timings.

    python benchmarks/gpu_ops.py memcheck   # every op, odd sizes, all dtypes, views, backward; for memcheck
    python benchmarks/gpu_ops.py bench      # bandwidth vs a device-to-device copy; CUDA graphs vs eager

Device times come from CUDA events around many calls, after warm-up; medians of repeated measurements.
"""
from __future__ import annotations

import statistics
import sys

import torch

from latentforge import latents, load, ops
from latentforge.checkpoint import load_checkpoint
from latentforge.demo import SHIPPED

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def memcheck(dev: str = "cuda") -> None:
    """Small, odd-sized calls that reach every kernel branch: tile edges, offsets, strides, dtypes, backward.
    (`memcheck("cpu")` runs the same calls on the CPU kernels.)"""
    for dtype in DTYPES:
        for b, d, h in ((1, 1, 1), (17, 33, 65), (3, 16, 2048)):
            mu, logvar, eps = (torch.randn(b, 2 * d, device=dev, dtype=dtype)[:, ::2] for _ in range(3))
            weight, bias = torch.randn(d, h, device=dev, dtype=dtype).t(), torch.randn(h, device=dev, dtype=dtype)
            for offset in (None, torch.randn(d, device=dev, dtype=dtype), torch.randn(b, d, device=dev, dtype=dtype)):
                for act in ops.ACTIVATIONS:
                    ops.reparam_linear(mu, logvar, eps, weight, bias, offset=offset, activation=act, impl="native")
        x = torch.rand(3, 3, 17, 9, device=dev, dtype=dtype).to(memory_format=torch.channels_last)
        ops.to_uint8_image(x, 0.0, 1.0, impl="native")
    ops.from_uint8_image(torch.randint(0, 256, (3, 17, 9, 3), device=dev, dtype=torch.uint8), -1.0, 1.0, impl="native")
    leaves = [torch.randn(5, 7, device=dev, requires_grad=True) for _ in range(3)]
    w = torch.randn(9, 7, device=dev, requires_grad=True)
    ops.reparam_linear(*leaves, w, None, activation="silu", impl="native").sum().backward()
    model = load(SHIPPED, "torch")
    model.decode(latents(3, model.latent_dim, seed=0))
    if dev == "cuda":
        torch.cuda.synchronize()
    print(f"memcheck driver: done on {dev}")


def device_ms(fn, calls: int = 50, repeats: int = 7) -> float:
    """Median over `repeats` of the mean ms per call across `calls` back-to-back calls, by CUDA events."""
    for _ in range(5):
        fn()
    results = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        results.append(start.elapsed_time(end) / calls)
    return statistics.median(results)


def bandwidth_rows() -> list[str]:
    dev = "cuda"
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device=dev).random_()
    dst = torch.empty_like(src)
    copy_gbs = 2 * src.numel() / device_ms(lambda: dst.copy_(src), calls=20) / 1e6
    lines = [f"device-to-device copy (256 MiB, read + write): {copy_gbs:.0f} GB/s", "",
             "op                          shape                      dtype     ms      GB/s   % copy"]

    def row(name, shape, dtype, fn, nbytes):
        ms = device_ms(fn)
        gbs = nbytes / ms / 1e6
        lines.append(f"{name:<27} {shape:<26} {str(dtype)[6:]:<9} {ms:7.4f} {gbs:7.0f} {100 * gbs / copy_gbs:7.1f}")

    for dtype in DTYPES:
        size = torch.finfo(dtype).bits // 8
        for b, d, h in ((1, 16, 2048), (256, 16, 2048), (4096, 512, 8192)):
            mu, logvar, eps = (torch.randn(b, d, device=dev, dtype=dtype) for _ in range(3))
            weight, bias = torch.randn(h, d, device=dev, dtype=dtype), torch.randn(h, device=dev, dtype=dtype)
            nbytes = size * (3 * b * d + h * d + h + b * h)  # each input read once, the output written once
            row("reparam_linear", f"B={b} D={d} H={h}", dtype,
                lambda: ops.reparam_linear(mu, logvar, eps, weight, bias, activation="relu", impl="native"), nbytes)
        x = torch.rand(256, 3, 64, 64, device=dev, dtype=dtype).to(memory_format=torch.channels_last)
        row("to_uint8_image", "256x3x64x64", dtype, lambda: ops.to_uint8_image(x, 0.0, 1.0, impl="native"),
            x.numel() * (size + 1))
    u = torch.randint(0, 256, (256, 64, 64, 3), device=dev, dtype=torch.uint8)
    row("from_uint8_image", "256x64x64x3", torch.uint8, lambda: ops.from_uint8_image(u, 0.0, 1.0, impl="native"),
        u.numel() * 5)
    return lines


def backend_rows() -> list[str]:
    """The shipped VAE's decode on device tensors: CUDA graph replay vs the same fused module launched eagerly vs
    the checkpoint's plain nn.Module; and what a user of Model.decode_float sees (host copies included)."""
    lines = ["", "decode of the shipped 64px VAE on device tensors (ms per batch, CUDA events)",
             "batch  precision  graph replay  fused eager  torch eager  Model.decode_float (host, incl. copies)"]
    eager, _ = load_checkpoint(SHIPPED)
    eager = eager.eval().cuda()
    import time

    for precision in ("fp32", "bf16"):
        model = load(SHIPPED, "torch", precision=precision)
        decoder = model._decoder
        for b in (1, 128):
            z_host = latents(b, model.latent_dim, seed=0)
            z = torch.from_numpy(z_host).cuda()
            with torch.inference_mode():
                model.decode_float(z_host)  # captures the graph for this batch size
                graph, static_in, _ = decoder._graphs.graphs[("float", b)]
                static_in.copy_(z)
                replay = device_ms(graph.replay)
                fused = device_ms(lambda: decoder._float(z))
                plain = device_ms(lambda: eager.decode(z))
            start = time.perf_counter()
            for _ in range(50):
                model.decode_float(z_host)
            host = (time.perf_counter() - start) / 50 * 1e3
            lines.append(f"{b:5d}  {precision:9}  {replay:12.4f}  {fused:11.4f}  {plain:11.4f}  {host:10.4f}")
    return lines


def bench() -> None:
    props = torch.cuda.get_device_properties(0)
    ops.native.ensure()
    print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}; native ops: {ops.native.info}")
    print("\n".join(bandwidth_rows() + backend_rows()))


if __name__ == "__main__":
    {"memcheck": memcheck, "bench": bench}[sys.argv[1]]()
