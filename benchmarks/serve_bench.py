"""`latentforge serve` under load: WebSocket streams, HTTP against in process, and overload, in one run.

    python benchmarks/serve_bench.py [--clients 1,4,16] [--seconds 5] [--overload-seconds 60] [--out DIR]

The server runs the shipped 64 px faces VAE in its own process (`latentforge serve`, 127.0.0.1, an ephemeral
port); the clients run here. Reports:
- K concurrent WebSocket clients, each sending a 64 px PNG frame, waiting for the filtered frame and pacing
  to 30 frames/s: per-client frames/s, glass-to-glass (send -> filtered frame received) p50/p99, and the
  server's mean filter batch size (from /metrics);
- HTTP POST /sample at n = 1 (.npy, one keep-alive connection) against model.sample(1) in this process;
- overload: 2 x max-queue clients posting /sample n = 8 back to back: status codes seen, server RSS at the
  start and end.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from latentforge import load
from latentforge.demo import SHIPPED
from latentforge.runtime.machine import machine_info

FPS = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"content-type": "application/json", "accept": "application/x-npy"})
    response = conn.getresponse()
    return response.status, response.read()


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def filter_batches(port: int) -> tuple[float, float]:
    """(sum of rows, number of batches) of the filter path so far, from /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    text = request(conn, "GET", "/metrics")[1].decode()
    total = re.search(r'latentforge_batch_size_sum\{model="faces_vae",path="filter"\} (\S+)', text)
    count = re.search(r'latentforge_batch_size_count\{model="faces_vae",path="filter"\} (\S+)', text)
    return (float(total.group(1)), float(count.group(1))) if total else (0.0, 0.0)


def percentiles(seconds) -> dict:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


async def stream_client(port: int, frame: bytes, seconds: float) -> dict:
    from websockets.asyncio.client import connect

    latencies, frames = [], 0
    async with connect(f"ws://127.0.0.1:{port}/v1/models/faces_vae/filter", max_size=None) as ws:
        start = time.perf_counter()
        tick = start
        while time.perf_counter() - start < seconds:
            sent = time.perf_counter()
            await ws.send(frame)
            while not isinstance(await ws.recv(), bytes):  # skip stats messages
                pass
            latencies.append(time.perf_counter() - sent)
            frames += 1
            tick += 1 / FPS
            await asyncio.sleep(max(0.0, tick - time.perf_counter()))
        elapsed = time.perf_counter() - start
    return {"fps": frames / elapsed, "latencies": latencies}


def streams(port: int, clients: int, seconds: float, frame: bytes) -> dict:
    before = filter_batches(port)

    async def run_all():
        return await asyncio.gather(*(stream_client(port, frame, seconds) for _ in range(clients)))

    results = asyncio.run(run_all())
    after = filter_batches(port)
    fps = [r["fps"] for r in results]
    batches = after[1] - before[1]
    return {"clients": clients, "fps_min": min(fps), "fps_mean": float(np.mean(fps)),
            **percentiles([t for r in results for t in r["latencies"]]),
            "mean_batch": (after[0] - before[0]) / batches if batches else None}


def http_vs_in_process(port: int, repeats: int) -> dict:
    model = load(SHIPPED)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    http_times, local_times = [], []
    for i in range(repeats + 10):  # interleaved, so both see the same load on the machine
        t = time.perf_counter()
        status, _ = request(conn, "POST", "/v1/models/faces_vae/sample", {"n": 1, "seed": i})
        http_t = time.perf_counter() - t
        t = time.perf_counter()
        model.sample(1, seed=i)
        local_t = time.perf_counter() - t
        assert status == 200, status
        if i >= 10:  # warm-up
            http_times.append(http_t)
            local_times.append(local_t)
    http_p, local_p = percentiles(http_times), percentiles(local_times)
    return {"http": http_p, "in_process": local_p, "overhead_p50_ms": http_p["p50_ms"] - local_p["p50_ms"],
            "in_process_backend": model.backend}


def overload(port: int, pid: int, clients: int, seconds: float) -> dict:
    statuses = collections.Counter()
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    rss = [rss_mb(pid)]

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port)
        while time.perf_counter() < stop:
            try:
                status, _ = request(conn, "POST", "/v1/models/faces_vae/sample", {"n": 8})
            except (ConnectionError, http.client.HTTPException):
                status = "connection error"
                conn = http.client.HTTPConnection("127.0.0.1", port)
            with lock:
                statuses[str(status)] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    while time.perf_counter() < stop:
        time.sleep(min(5.0, max(0.0, stop - time.perf_counter())))
        rss.append(rss_mb(pid))
    for t in threads:
        t.join()
    return {"clients": clients, "seconds": seconds, "statuses": dict(statuses), "rss_mb": rss,
            "rss_growth": rss[-1] / rss[1] - 1.0}  # from after the first 5 s, once the allocator has settled


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--overload-seconds", type=float, default=60.0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "latentforge.cli", "serve", str(SHIPPED), "--port", str(port),
                               "--max-queue", str(args.max_queue), "--log-level", "error"])
    try:
        for _ in range(600):
            try:
                if request(http.client.HTTPConnection("127.0.0.1", port), "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        from PIL import Image
        import io

        buffer = io.BytesIO()
        load(SHIPPED).sample(1, seed=0)
        Image.fromarray(load(SHIPPED).sample(1, seed=0)[0]).save(buffer, format="PNG")
        frame = buffer.getvalue()
        report = {"machine": machine_info(), "model": SHIPPED.name, "fps_target": FPS, "streams": [],
                  "note": "2 shared cores; two other engineers' jobs were running on them during this run"}
        for k in (int(c) for c in args.clients.split(",")):
            row = streams(port, k, args.seconds, frame)
            report["streams"].append(row)
            print(f"{k:3d} streams: fps/client min {row['fps_min']:.1f} mean {row['fps_mean']:.1f}; "
                  f"glass-to-glass p50 {row['p50_ms']:.2f} ms p99 {row['p99_ms']:.2f} ms; "
                  f"mean filter batch {row['mean_batch'] or 0:.2f}", flush=True)
        report["sample_n1"] = http_vs_in_process(port, args.repeats)
        s = report["sample_n1"]
        print(f"sample n=1: HTTP p50 {s['http']['p50_ms']:.3f} ms p99 {s['http']['p99_ms']:.3f} ms; in process "
              f"p50 {s['in_process']['p50_ms']:.3f} ms p99 {s['in_process']['p99_ms']:.3f} ms; "
              f"overhead p50 {s['overhead_p50_ms']:.3f} ms", flush=True)
        report["overload"] = overload(port, server.pid, 2 * args.max_queue, args.overload_seconds)
        o = report["overload"]
        print(f"overload ({o['clients']} clients, max-queue {args.max_queue}, {o['seconds']:.0f} s): "
              f"statuses {o['statuses']}; server RSS {o['rss_mb'][0]:.0f} -> {o['rss_mb'][-1]:.0f} MB "
              f"({100 * o['rss_growth']:+.1f}% after the first 5 s)", flush=True)
    finally:
        server.terminate()
        report_code = server.wait(timeout=15)
    report["server_exit_code"] = report_code
    out = Path(args.out)
    (out / "serve-cpu-2core.json").write_text(json.dumps(report, indent=2))
    print(f"server exit code {report_code}; wrote {out / 'serve-cpu-2core.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
