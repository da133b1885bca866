"""Speed of latentforge's codec: compress and decompress images/s at batch 1 and 64, and where the time goes.

    OMP_NUM_THREADS=1 python benchmarks/codec_speed.py [--backend onnxruntime] [--threads 1] [--repeats 3]

Faces test images, the shipped faces codec: the VQ point (quality 6: 256 prior steps an image, run as the
float64 key/value-cached step graph) and a VAE point (quality 3). Each call is timed whole (median over
--repeats, p90 beside it) and split into: the prior's steps, the integer tables (codec_probs), the
VQ encoder or decoder network, and the rest (constriction's range coder and the Python loop). The float32
step graph's time per step is measured beside the float64 one, to show what the exact twin costs.
Results: results/codec-speed-<backend>.md and .json.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np


def timed(counter: Counter, name: str, f):
    def run(*a, **k):
        start = time.perf_counter()
        out = f(*a, **k)
        counter[name] += time.perf_counter() - start
        return out
    return run


def step_ms(graph_run, cache_shape, n: int, dtype, repeats: int = 30) -> float:
    cache = np.zeros((n, *cache_shape), dtype=dtype)
    token, position = np.zeros(n, dtype=np.int64), np.array([128], dtype=np.int64)
    graph_run(token, position, cache)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        graph_run(token, position, cache)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    import torch

    from latentforge.files import write_report
    from latentforge.runtime import codec_vq
    from latentforge.runtime.codec import codec_of, compress, decompress, load_codec_model
    from latentforge.runtime.machine import machine_info
    from latentforge.training.data import open_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = open_data("faces").get("test", np.arange(64))[0]
    head = ("| point | batch | call | images/s | ms/image p50 | ms/image p90 | prior steps | tables | network | "
            "rest (range coder, loop) |")
    rows = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    report = {"backend": args.backend, "threads": args.threads, "rows": []}
    for quality in (6, 3):
        model, point = load_codec_model("faces", args.backend, args.threads, quality=quality)
        codec = codec_of(model, point)
        parts = Counter()
        if quality == 6:
            make_run = codec.coder.make_run
            codec.coder.make_run = lambda make_run=make_run, parts=parts: timed(parts, "prior", make_run())
            codec_vq._tables = timed(parts, "tables", codec_vq._tables)
        codec.analyse = timed(parts, "network", codec.analyse)
        codec.synthesize = timed(parts, "network", codec.synthesize)
        for n in (1, 64):
            x = images[:n]
            data = compress(model, x, point=point)
            calls = (("compress", lambda x=x, m=model, p=point: compress(m, x, point=p)),
                     ("decompress", lambda data=data, m=model: decompress(data, m)))
            for call, fn in calls:
                totals, shares = [], Counter()
                for _ in range(args.repeats):
                    parts.clear()
                    start = time.perf_counter()
                    fn()
                    totals.append(time.perf_counter() - start)
                    for k, v in parts.items():
                        shares[k] += v / args.repeats
                p50, p90 = (1000 * float(np.percentile(totals, q)) / n for q in (50, 90))
                total = float(np.mean(totals))
                rest = total - sum(shares.values())
                share = {k: 100 * shares.get(k, 0.0) / total for k in ("prior", "tables", "network")}
                rows.append(f"| {'vq' if quality == 6 else 'vae-q3'} | {n} | {call} | {1000 / p50:.2f} | {p50:.1f} | "
                            f"{p90:.1f} | {share['prior']:.0f} % | {share['tables']:.0f} % | {share['network']:.0f} % "
                            f"| {100 * rest / total:.0f} % |")
                report["rows"].append({"point": quality, "batch": n, "call": call, "ms_per_image_p50": p50,
                                       "ms_per_image_p90": p90, "shares_percent": share,
                                       "rest_percent": 100 * rest / total})
                print(rows[-1], flush=True)
        if quality == 6:
            steps = step_comparison(model, args.backend, args.threads)
            report["step_ms"] = steps
    setting = (f"Backend {args.backend}, {args.threads} thread(s), faces 64x64, median of {args.repeats} calls; "
               "load from other jobs on this machine makes these noisy.")
    lines = ["# latentforge codec speed", "", setting, "", *rows,
             "", "One prior step (ms), float32 graph (sampling) vs the codec's float64 graph:", ""]
    lines += [f"- batch {n}: float32 {v['float32']:.2f} ms, float64 {v['float64']:.2f} ms" for n, v in steps.items()]
    info = machine_info()
    report["machine"] = info
    write_report(args.out, f"codec-speed-{args.backend}", lines, report,
                 f"{info.get('cpu', '')}, {info.get('physical_cores')} cores, load {info.get('load_average_1min')}")


def step_comparison(model, backend: str, threads: int) -> dict:
    """ms per prior step of the float32 and the float64 graph at batch 1 and 64."""
    from latentforge.checkpoint import load_checkpoint
    from latentforge.export.codec import exact_step_graph
    from latentforge.export.vq import vq_graphs
    from latentforge.models.prior import PriorStep, exact_step
    from latentforge.runtime.graphs import open_graph

    module, info = load_checkpoint(model.path)
    f32 = open_graph(backend, vq_graphs(module, info)["prior"], threads, "f32 step")
    f64 = open_graph(backend, exact_step_graph(exact_step(module.transformer)), threads, "f64 step")
    shape = tuple(PriorStep(module.transformer).empty_cache(1).shape[1:])
    out = {}
    for n in (1, 64):
        out[n] = {name: step_ms(lambda t, p, c, g=g: g.run({"token": t, "position": p, "cache": c}), shape, n, dt)
                  for name, g, dt in (("float32", f32, np.float32), ("float64", f64, np.float64))}
    return out


if __name__ == "__main__":
    main()
