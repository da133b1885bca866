"""Concurrent single-latent decodes, with and without the micro-batcher, in one run.

    python benchmarks/batching_bench.py [--clients 8] [--seconds 3] [--json OUT]

Each of `clients` threads decodes one latent at a time (uint8 image out) for `seconds`, calling the
Model directly (onnxruntime runs the calls side by side) or through MicroBatcher(max_batch,
max_wait_ms), which turns them into batched calls. Reports images/s and per-request p50/p99.
"""
from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np

from latentforge import latents, load
from latentforge.demo import SHIPPED
from latentforge.runtime.batching import MicroBatcher
from latentforge.runtime.machine import machine_info


def drive(call, clients: int, seconds: float, dim: int) -> dict:
    z = [latents(1, dim, seed=i) for i in range(clients)]
    times: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds
    start = threading.Barrier(clients + 1)

    def client(i):
        start.wait()
        while time.perf_counter() < stop:
            t = time.perf_counter()
            call(z[i])
            times[i].append(time.perf_counter() - t)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    ms = np.concatenate([np.array(t) for t in times]) * 1e3
    return {"images_per_s": len(ms) / (time.perf_counter() - began), "p50_ms": float(np.median(ms)),
            "p99_ms": float(np.percentile(ms, 99)), "requests": len(ms)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=1.0)
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: one per core)")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    model = load(SHIPPED, "onnxruntime", threads=args.threads)
    model.decode(latents(4, model.latent_dim))  # warm-up
    report = {"machine": machine_info(), "model": str(SHIPPED), "backend": model.backend, "threads": model.threads,
              "clients": args.clients, "seconds": args.seconds, "rows": {}}
    report["rows"]["direct"] = drive(model.decode, args.clients, args.seconds, model.latent_dim)
    with MicroBatcher(model.decode, args.max_batch, args.max_wait_ms) as batcher:
        report["rows"][f"MicroBatcher(max_batch={args.max_batch}, max_wait_ms={args.max_wait_ms})"] = \
            drive(batcher, args.clients, args.seconds, model.latent_dim)
        report["mean_batch"] = batcher.requests / max(batcher.batches, 1)
    print(f"{args.clients} clients, one latent per request, {model.backend} with {model.threads} threads; "
          f"1-min load {report['machine']['load_average_1min']:.1f}")
    for name, r in report["rows"].items():
        print(f"{name:45s} {r['images_per_s']:8.0f} img/s  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms")
    print(f"mean batch through the batcher: {report['mean_batch']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
