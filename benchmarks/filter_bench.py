"""Filter speed, single stream, uint8 frame in -> uint8 frame out, side by side in one run.

    python benchmarks/filter_bench.py                              # writes benchmarks/results/filter-cpu-2core.{md,json}
    python benchmarks/filter_bench.py --seconds 0.5 --out /tmp/x   # a quick smoke run
    python benchmarks/filter_bench.py --checkpoint RUN/checkpoint.safetensors   # also a VAE you trained

`--checkpoint`: a VAE trained with the CLI's defaults (`latentforge train vae --image-size 64 --latent-dim 32`,
base_channels 32, max_channels 256: 0.108 GFLOP per frame, 3.8x the shipped faces VAE), benched as a third model.
Each model is first tuned here (`latentforge tune CKPT --batch 1`, in a scratch copy, no torch.compile), and the
first row, "latentforge Filter (auto)", is what a user gets from `Filter(latentforge.load(ckpt))`: the record's
filter engine.

The torch peer runs with torch's default thread count, which OMP_NUM_THREADS sets (a shared machine
asks for OMP_NUM_THREADS=1; the committed smoke run used it); latentforge rows are timed at 1 and 2 threads.

Models: the shipped 64x64 faces VAE, and a random-init 256x256 VAE of the same family
(base_channels 16, max_channels 128, latent_dim 16). Engines, each doing encode -> z = mu + offset
(an "eyes open"-style edit, temperature 0) -> decode on every frame:
  latentforge Filter     f(frame): the exported filter graph, one runtime call (onnxruntime or OpenVINO)
  latentforge stream     f.stream(frames): pre/infer/post overlapped on three threads (throughput)
  torch eager (naive)    what a user writes: from_numpy, permute, /255, encode, decode, *255, byte()
  onnxruntime (plain)    encoder and decoder exported separately, default sessions, NumPy pre/post
Frames come at the model's size (no resize) unless the row says 480x640 (center crop + resize both ways).
Per-frame latency is one call's wall time; frames/s is frames / total time.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from latentforge import Filter, load
from latentforge.checkpoint import save_checkpoint
from latentforge.demo import SHIPPED
from latentforge.models import ConvVAE, VAEConfig
from latentforge.runtime.flops import count_flops_torch
from latentforge.runtime.machine import machine_info, matmul_ceiling

TARGETS = {64: "≥ 1000 frames/s and p99 ≤ 2 ms (the default-trained VAE)",
           256: "≥ 1.5x the frames/s of the plain onnxruntime encoder + decoder pipeline"}


def ratios(rows: list[dict]) -> list[str]:
    """Per model: latentforge Filter (auto) frames/s against the plain onnxruntime pipeline's, same run."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        auto = next(r for r in rows if r["model"] == model and r["engine"].startswith("latentforge Filter (auto"))
        plain = next(r for r in rows if r["model"] == model and r["engine"] == "onnxruntime (plain)")
        lines.append(f"{model}: Filter (auto) {auto['fps']:.0f} frames/s, p99 {auto['p99_ms']:.2f} ms; "
                     f"x plain onnxruntime = {auto['fps'] / plain['fps']:.2f}")
    return lines


def naive_torch(module, offset: np.ndarray):
    off = torch.from_numpy(offset)

    def run(frame):
        with torch.no_grad():
            x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
            mu, _ = module.encode(x)
            y = module.decode(mu + off)
            return (y[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).byte().numpy()

    return run


def _onnx(module, args, names, outputs) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False, input_names=names, output_names=outputs,
                          opset_version=18)
    return buffer.getvalue()


def plain_onnxruntime(module, size: int, offset: np.ndarray):
    import onnxruntime as ort

    class Method(torch.nn.Module):
        """One method of the VAE as a module, as a user exports its encoder and decoder apart."""

        def __init__(self, name):
            super().__init__()
            self.vae, self.name = module, name

        def forward(self, x):
            return getattr(self.vae, self.name)(x)

    frame = torch.zeros(1, 3, size, size)
    enc = ort.InferenceSession(_onnx(Method("encode").eval(), (frame,), ["x"], ["mu", "logvar"]),
                               providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(_onnx(Method("decode").eval(), (torch.zeros(1, offset.shape[1]),), ["z"], ["image"]),
                               providers=["CPUExecutionProvider"])

    def run(frame):
        x = frame.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        mu = enc.run(["mu"], {"x": x})[0]
        y = dec.run(["image"], {"z": mu + offset})[0]
        return np.clip(np.rint(y[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)

    return run


def op_shares(graph_bytes: bytes, frame: np.ndarray, latent_dim: int, tmp: Path, runs: int = 30) -> dict:
    """Where the filter step's time goes inside onnxruntime (1 thread): % of kernel time per op type."""
    import collections

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / "profile")
    session = ort.InferenceSession(graph_bytes, options, providers=["CPUExecutionProvider"])
    feeds = {"frame": frame[None], "offset": np.zeros((1, latent_dim), np.float32),
             "temperature": np.zeros(1, np.float32), "eps": np.zeros((1, latent_dim), np.float32)}
    for _ in range(runs):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    return {op: round(100 * us / total, 1) for op, us in per_op.most_common(6)}


def time_calls(run, frames, seconds: float) -> tuple[np.ndarray, float]:
    """Per-call latencies (s) over at least `seconds` (and 20 calls) after 10 warm-up calls; frames/s."""
    for frame in frames[:10]:
        run(frame)
    times = []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds or len(times) < 20:
        t = time.perf_counter()
        run(frames[i % len(frames)])
        times.append(time.perf_counter() - t)
        i += 1
    return np.array(times), len(times) / (time.perf_counter() - start)


def row(model_name, engine, threads, frame_shape, times, fps, stats=None) -> dict:
    ms = times * 1e3
    out = {"model": model_name, "engine": engine, "threads": threads, "frame": "x".join(map(str, frame_shape[:2])),
           "frames": len(times), "fps": fps, "p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))}
    if stats is not None:
        out["stages"] = stats.snapshot()["stages"]
    return out


def bench_model(name: str, ckpt: Path, size: int, offset: np.ndarray, seconds: float, tmp: Path) -> list[dict]:
    import shutil

    from latentforge.runtime.tune import tune

    rows = []
    rng = np.random.default_rng(0)
    frames = list(rng.integers(0, 256, (64, size, size, 3), dtype=np.uint8))
    camera = list(rng.integers(0, 256, (8, 480, 640, 3), dtype=np.uint8))
    ckpt = Path(shutil.copy(ckpt, tmp / f"{name.replace(' ', '_')}.safetensors"))   # its record lands in scratch
    dim = load(ckpt, "torch").latent_dim
    offset = np.resize(offset, (1, dim)).astype(np.float32)   # the same edit vector, cut or repeated to D
    record, _ = tune(ckpt, (1,), seconds=max(6 * seconds, 8.0), compile=False)   # the filter gets a quarter
    model = load(ckpt)
    model.attributes = {"edit": offset[0]}
    f = Filter(model, {"edit": 1.0})
    times, fps = time_calls(f, frames, seconds)
    rows.append(row(name, f"latentforge Filter (auto: {record.filter.label if record.filter else f.backend})",
                    "auto", frames[0].shape, times, fps, f.stats))
    print(rows[-1]["engine"], f"{fps:.0f} fps", flush=True)
    for threads in (1, 2):
        model = load(ckpt, "onnxruntime", threads=threads)
        model.attributes = {"edit": offset[0]}
        f = Filter(model, {"edit": 1.0})
        f.stats.__init__()  # the graph's export and first run are not the steady state
        times, fps = time_calls(f, frames, seconds)
        rows.append(row(name, "latentforge Filter (onnxruntime graph)", threads, frames[0].shape, times, fps, f.stats))
        print(rows[-1]["engine"], threads, f"{fps:.0f} fps", flush=True)
        if threads == 1:
            graph_file = tmp / f"{name}.filter.onnx"
            graph_file.write_bytes(f._graph.source)
            shares = op_shares(f._graph.source, frames[0], model.latent_dim, tmp)
            flops = count_flops_torch(model._encoder.module, model.latent_dim,
                                      lambda m: m.decode(m.encode(torch.zeros(1, 3, size, size))[0]))
        stream = Filter(model, {"edit": 1.0})
        list(stream.stream(frames[:16]))  # warm-up
        stream.stats.__init__()
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            n += sum(1 for _ in stream.stream(frames))
        elapsed = time.perf_counter() - start
        infer = np.array(list(stream.stats._times["infer"]))
        rows.append(row(name, "latentforge stream (3 threads, throughput)", threads, frames[0].shape, infer,
                        n / elapsed, stream.stats))
        rows[-1]["p50_ms"] = rows[-1]["p99_ms"] = None  # a stream's throughput has no per-call latency
        print(rows[-1]["engine"], threads, f"{n / elapsed:.0f} fps", flush=True)
    ov = load(graph_file, "openvino", threads=1)
    ov.attributes = {"edit": offset[0]}
    f = Filter(ov, {"edit": 1.0})
    times, fps = time_calls(f, frames, seconds)
    rows.append(row(name, "latentforge Filter (openvino graph)", 1, frames[0].shape, times, fps, f.stats))
    model = load(ckpt, "onnxruntime", threads=1)
    model.attributes = {"edit": offset[0]}
    f = Filter(model, {"edit": 1.0})
    f(camera[0])
    f.stats.__init__()
    times, fps = time_calls(f, camera, seconds)
    rows.append(row(name, "latentforge Filter (onnxruntime graph)", 1, camera[0].shape, times, fps, f.stats))

    from latentforge.checkpoint import load_checkpoint

    module, _ = load_checkpoint(ckpt)
    module.eval()
    times, fps = time_calls(naive_torch(module, offset), frames, seconds)
    rows.append(row(name, "torch eager (naive)", torch.get_num_threads(), frames[0].shape, times, fps))
    times, fps = time_calls(plain_onnxruntime(module, size, offset), frames, seconds)
    rows.append(row(name, "onnxruntime (plain)", "default", frames[0].shape, times, fps))
    print(name, "done", flush=True)
    for r in rows:
        r["onnxruntime_op_shares_pct"] = shares
        r["flops_per_frame"] = flops
        r["gflops_at_p50"] = flops / r["p50_ms"] / 1e6 if r["p50_ms"] else None
    return rows


def _stage(r, stage):
    s = r.get("stages", {}).get(stage)
    return f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f}" if s and s["n"] else "—"


def table(rows: list[dict]) -> str:
    head = ("| model | engine | threads | frame | frames/s | p50 ms | p99 ms | GFLOP/s at p50 | pre p50/p99 ms "
            "| infer p50/p99 ms | post p50/p99 ms |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        p50 = "—" if r["p50_ms"] is None else f"{r['p50_ms']:.3f}"
        p99 = "—" if r["p99_ms"] is None else f"{r['p99_ms']:.3f}"
        gflops = "—" if r["gflops_at_p50"] is None else f"{r['gflops_at_p50']:.1f}"
        lines.append(f"| {r['model']} | {r['engine']} | {r['threads']} | {r['frame']} | {r['fps']:.0f} | {p50} | "
                     f"{p99} | {gflops} | {_stage(r, 'pre')} | {_stage(r, 'infer')} | {_stage(r, 'post')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row")
    parser.add_argument("--out", default="benchmarks/results/filter-cpu-2core", help="writes OUT.md and OUT.json")
    parser.add_argument("--checkpoint", help="a VAE trained with the CLI defaults, benched as a third model")
    parser.add_argument("--only-checkpoint", action="store_true", help="bench --checkpoint alone")
    args = parser.parse_args(argv)
    machine = machine_info()
    ceiling = matmul_ceiling("float32")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        offset = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
        if args.checkpoint:
            from latentforge.checkpoint import read_info

            size = read_info(args.checkpoint).config["image_size"]
            rows += bench_model(f"default-trained VAE {size}px", Path(args.checkpoint), size, offset, args.seconds,
                                tmp)
        if not args.only_checkpoint:
            rows += bench_model("faces VAE 64px", SHIPPED, 64, offset, args.seconds, tmp)
            torch.manual_seed(0)
            big = ConvVAE(VAEConfig(image_size=256, base_channels=16, max_channels=128, latent_dim=16)).eval()
            ckpt = save_checkpoint(tmp / "vae256.safetensors", big, data="random", step=0)
            rows += bench_model("random VAE 256px", ckpt, 256, offset, args.seconds, tmp)
    flops = {r["model"]: r["flops_per_frame"] for r in rows}
    shares = {r["model"]: r["onnxruntime_op_shares_pct"] for r in rows}
    report = {"machine": machine, "fp32_ceiling": ceiling, "seconds_per_row": args.seconds, "targets": TARGETS,
              "rows": rows,
              "counted": "uint8 frame in -> uint8 frame out per call, including crop/resize when the frame is "
                         "larger than the model; latentforge rows include edit offset and stats bookkeeping"}
    text = (f"# Filter benchmark\n\nmachine: {machine['cpu']}, {machine['physical_cores']} physical cores, features "
            f"{' '.join(machine['features'])}, 1-min load {machine['load_average_1min']:.1f}; "
            f"{', '.join(f'{k} {v}' for k, v in machine['versions'].items())}; {machine['date']}\n\n"
            f"{report['counted']}. {args.seconds} s timed per row, after warm-up. Targets: 64 px {TARGETS[64]}; "
            f"256 px {TARGETS[256]}.\n\nFLOPs per frame (encode + decode convolutions and linears, from forward hooks): "
            + ", ".join(f"{k} {v / 1e9:.3f} GFLOP" for k, v in flops.items())
            + f"; fp32 ceiling in this run: {ceiling['gflops']:.0f} GFLOP/s ({ceiling['library']}, "
            f"{ceiling['n']}^2).\n\n" + table(rows) + "\n\nWhere the filter step's time goes inside onnxruntime "
            "(1 thread, % of kernel time by op): "
            + "; ".join(f"{k}: " + ", ".join(f"{op} {pct}%" for op, pct in v.items()) for k, v in shares.items())
            + "\n\n" + "\n".join(f"- {line}" for line in ratios(rows))
            + f"\n\n1-min load at the end: {machine_info()['load_average_1min']:.1f}\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=2, default=str))
    Path(args.out + ".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
