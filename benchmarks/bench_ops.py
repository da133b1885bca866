"""The fused ops on CPU, beside what they replace, in one run.

    python benchmarks/bench_ops.py [--min-time 0.5] [--out benchmarks/results]

1. reparam_linear (native) vs the same math as separate torch calls (exp, mul, mul, add, add, linear, act) at
   B = 1, 16, 256, for the shipped faces VAE's head (D=16, H=2048, relu) and a wide one (D=512, H=8192, lrelu).
2. to_uint8_image (native) vs NumPy's conversion (what the onnxruntime path uses) and torch ops, 64x64x3.
3. The whole decode of the shipped VAE, batch 1 and 128: latentforge's torch backend (fused ops, folded
   BatchNorm) vs plain torch eager vs onnxruntime (runtime.bench), z -> float image; then z -> uint8 images
   through `Model.decode` on the torch and onnxruntime backends.
Writes ops-cpu-2core.txt and .json (p50/p90/p99 ms, images/s or GFLOP/s, machine info) into --out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentforge import latents, load, ops
from latentforge.demo import SHIPPED
from latentforge.files import atomic_write_bytes
from latentforge.images import to_uint8
from latentforge.runtime.bench import run_bench, time_calls
from latentforge.runtime.machine import machine_info, physical_cores

HEADS = (("faces VAE head", 16, 2048, "relu"), ("wide head", 512, 8192, "lrelu"))
HEAD_BATCHES = (1, 16, 256)
DECODE_BATCHES = (1, 128)


def unfused_head(mu, logvar, eps, offset, weight, bias, temperature, activation):
    """What a user writes without the fused op: every step its own torch call and its own output tensor."""
    std = torch.exp(0.5 * logvar)
    z = mu + temperature * std * eps + offset
    y = F.linear(z, weight, bias)
    return torch.relu(y) if activation == "relu" else F.leaky_relu(y, ops.LEAKY_SLOPE)


def stats(times: np.ndarray) -> dict:
    p50, p90, p99 = np.percentile(times, [50, 90, 99]) * 1e3
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "runs": len(times)}


def timed(fn, min_time: float, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn(None)
    return stats(time_calls(fn, None, min_time))


def head_rows(min_time: float) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for label, d, h, act in HEADS:
        weight, bias, offset = torch.randn(h, d, generator=gen) / d**0.5, torch.randn(h, generator=gen), torch.randn(d)
        for b in HEAD_BATCHES:
            mu, logvar, eps = (torch.randn(b, d, generator=gen) for _ in range(3))
            args = (mu, logvar, eps, offset, weight, bias, 1.0, act)
            fused = torch.ops.latentforge.reparam_linear
            with torch.inference_mode():
                torch.testing.assert_close(fused(*args), unfused_head(*args), rtol=1e-4, atol=1e-4)
                for name, fn in (("fused reparam_linear", fused), ("unfused torch ops", unfused_head)):
                    row = timed(lambda _, fn=fn: fn(*args), min_time)
                    row |= {"op": label, "impl": name, "B": b, "D": d, "H": h, "activation": act,
                            "gflops": 2 * b * d * h / (row["p50_ms"] / 1e3) / 1e9}
                    rows.append(row)
    return rows


def image_rows(min_time: float) -> list[dict]:
    rows = []
    for b in DECODE_BATCHES:
        x = torch.rand(b, 3, 64, 64).to(memory_format=torch.channels_last)  # as the torch backend's output
        xn = x.contiguous().numpy()  # what the onnxruntime backend hands to NumPy
        peers = (("fused to_uint8_image", lambda _: ops.to_uint8_image(x, 0.0, 1.0, impl="native")),
                 ("torch ops (ref)", lambda _: ops.to_uint8_image(x, 0.0, 1.0, impl="ref")),
                 ("numpy to_uint8", lambda _: to_uint8(xn, (0.0, 1.0))))
        for name, fn in peers:
            row = timed(fn, min_time)
            rows.append(row | {"op": "to_uint8_image 64x64x3", "impl": name, "B": b,
                               "images_per_s": b / (row["p50_ms"] / 1e3)})
    return rows


def uint8_decode_rows(min_time: float) -> list[dict]:
    rows = []
    threads = torch.get_num_threads()
    models = {"latentforge torch (fused)": load(SHIPPED, "torch", threads=threads),
              "latentforge onnxruntime": load(SHIPPED, "onnxruntime", threads=threads)}
    for b in DECODE_BATCHES:
        z = latents(b, 16, seed=0)
        for name, model in models.items():
            row = timed(lambda _, m=model: m.decode(z), min_time)
            rows.append(row | {"engine": name, "batch": b, "images_per_s": b / (row["p50_ms"] / 1e3)})
    return rows


def table(rows: list[dict], columns: list[str]) -> list[str]:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) and abs(v) < 100 else f"{v:.0f}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(columns, *body)]
    return ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [columns, *body]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timed calls per row")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"), help="folder for the results")
    parser.add_argument("--threads", type=int, default=physical_cores(), help="torch threads (default: physical cores)")
    args = parser.parse_args(argv)
    ops.native.ensure()
    if ops.native.info is None:
        raise SystemExit(f"the native ops did not build: {ops.native.error}")
    torch.set_num_threads(args.threads)
    machine = machine_info()
    heads, images = head_rows(args.min_time), image_rows(args.min_time)
    decode = run_bench(SHIPPED, batches=DECODE_BATCHES, min_time=args.min_time, threads=args.threads,
                       compile=False)
    uint8 = uint8_decode_rows(args.min_time)
    lines = [f"latentforge fused ops, CPU: {machine['cpu']}, {machine['physical_cores']} physical cores, "
             f"features {' '.join(machine['features']) or 'none listed'}, torch threads {torch.get_num_threads()}, "
             f"1-min load {machine['load_average_1min']:.1f}, {machine['date']}",
             f"versions: {', '.join(f'{k} {v}' for k, v in machine['versions'].items())}",
             f"native library: {ops.native.info.path}", "",
             "1. decoder head, fp32, outputs allocated per call, medians over >= "
             f"{args.min_time:g} s after 5 warm-up calls",
             *table(heads, ["op", "impl", "B", "D", "H", "p50_ms", "p90_ms", "p99_ms", "gflops"]), "",
             "2. float NCHW -> uint8 NHWC",
             *table(images, ["op", "impl", "B", "p50_ms", "p90_ms", "p99_ms", "images_per_s"]), "",
             "3. whole decode of the shipped 64px faces VAE (runtime.bench; 'latentforge torch' is the fused backend)",
             decode.table(), "",
             "   z -> uint8 images through Model.decode (validation and conversion included)",
             *table(uint8, ["engine", "batch", "p50_ms", "p90_ms", "p99_ms", "images_per_s"])]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    atomic_write_bytes(out / "ops-cpu-2core.txt", text.encode())
    report = {"machine": machine, "torch_threads": torch.get_num_threads(), "min_time": args.min_time,
              "head": heads, "to_uint8": images, "decode": decode.to_json(), "decode_uint8": uint8}
    atomic_write_bytes(out / "ops-cpu-2core.json", json.dumps(report, indent=2, default=float).encode())


if __name__ == "__main__":
    main()
