"""`latentforge serve --ray` with 1 and 2 replicas, beside the plain server, in one run.

    python benchmarks/serve_ray_bench.py [--clients 8] [--seconds 10] [--out DIR]

Each server is the shipped 64 px faces VAE started through the CLI in its own process (127.0.0.1, an ephemeral
port, --threads 1 so that two replicas hold one core each), waited for on /readyz, loaded by K client threads
posting /sample n = 1 (.npy, keep-alive) back to back for S seconds, then stopped with SIGTERM. Reports requests/s,
p50/p99 latency and the status codes seen, per server.
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from latentforge.demo import SHIPPED
from latentforge.runtime.machine import machine_info
from serve_bench import free_port, request

SERVERS = {"plain": [], "ray, 1 replica": ["--ray", "--replicas", "1"], "ray, 2 replicas": ["--ray", "--replicas", "2"]}


def wait_ready(port: int, server: subprocess.Popen, seconds: float = 180.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode} before it was ready")
        try:
            if request(http.client.HTTPConnection("127.0.0.1", port, timeout=5), "GET", "/readyz")[0] == 200:
                return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"not ready after {seconds:.0f} s")


def load(port: int, clients: int, seconds: float) -> dict:
    latencies, statuses, lock = [], collections.Counter(), threading.Lock()
    stop = time.perf_counter() + seconds

    def client(k: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = 0
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                status, _ = request(conn, "POST", "/v1/models/faces_vae/sample", {"n": 1, "seed": k * 100_000 + i})
            except (OSError, http.client.HTTPException):
                status, conn = "connection error", http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                statuses[str(status)] += 1
                if status == 200:
                    latencies.append(time.perf_counter() - t)
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return {"requests_per_s": len(latencies) / elapsed, "p50_ms": float(np.median(ms)),
            "p99_ms": float(np.percentile(ms, 99)), "ok": len(latencies), "statuses": dict(statuses)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    report = {"machine": machine_info(), "model": SHIPPED.name, "clients": args.clients, "seconds": args.seconds,
              "note": "2 shared cores; other engineers' jobs were running on them; clients share the cores",
              "servers": {}}
    for name, flags in SERVERS.items():
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "latentforge.cli", "serve", str(SHIPPED), "--port", str(port),
                                   "--threads", "1", "--log-level", "error", *flags],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ready_s = wait_ready(port, server)
            load(port, args.clients, 2.0)  # warm-up
            row = {"ready_s": ready_s, **load(port, args.clients, args.seconds)}
        finally:
            server.send_signal(signal.SIGTERM)
            row_exit = server.wait(timeout=60)
        report["servers"][name] = {**row, "exit_code": row_exit}
        print(f"{name:16s} ready in {ready_s:5.1f} s; {row['requests_per_s']:7.1f} req/s; p50 {row['p50_ms']:6.2f} ms "
              f"p99 {row['p99_ms']:7.2f} ms; statuses {row['statuses']}; exit {row_exit}", flush=True)
    out = Path(args.out) / "serve-ray-cpu-2core.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
