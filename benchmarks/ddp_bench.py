"""Steps/s of VAE training on 1 vs 2 torchrun processes (gloo, CPU) at the same global batch, and the share of
a step spent all-reducing its gradients.

    python benchmarks/ddp_bench.py [--steps 30] [--batch-size 64] [--out benchmarks/results/ddp-cpu-2core]

Each world size runs under torchrun (`--worker` is one rank). Step time is the median of the per-step wall
times the run logs, the first 5 steps (warm-up) left out. The communication figure times, on the same ranks
after training, one all_reduce of a flat float32 tensor the size of the model's gradients (what each step
does once), median of 30. torchrun gives each of N > 1 processes OMP_NUM_THREADS=1; one process runs
twice, with the default threads (all cores) and with 1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WARMUP = 5


def worker(args) -> None:
    import torch
    import torch.distributed as dist

    from latentforge.training.train import TrainConfig, train

    out = Path(args.run_dir)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world > 1:  # joined here, so train() uses this group and the timing below can reuse it
        dist.init_process_group("gloo")
    train(TrainConfig(kind="vae", data="digits", out=str(out), steps=args.steps, batch_size=args.batch_size,
                      log_every=1, sample_every=10_000, checkpoint_every=10_000, eval_batches=0, progress=False))
    comm = []
    if world > 1:
        from safetensors.torch import load_file

        n = sum(t.numel() for k, t in load_file(str(out / "checkpoint.safetensors")).items())
        flat = torch.randn(n)
        for _ in range(30 + WARMUP):
            started = time.perf_counter()
            dist.all_reduce(flat)
            comm.append(time.perf_counter() - started)
        dist.destroy_process_group()
    if rank == 0:
        walls = [r["wall_s"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
        steps = np.diff(walls)[WARMUP:]
        result = {"processes": world, "threads_per_process": torch.get_num_threads(),
                  "step_ms_median": 1e3 * float(np.median(steps)), "step_ms_p90": 1e3 * float(np.percentile(steps, 90)),
                  "steps_per_s": 1.0 / float(np.median(steps)),
                  "allreduce_ms_median": 1e3 * float(np.median(comm[WARMUP:])) if comm else 0.0}
        result["communication_share"] = result["allreduce_ms_median"] / result["step_ms_median"]
        Path(args.result).write_text(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/ddp-cpu-2core")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--run-dir")
    p.add_argument("--result")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    from latentforge.runtime.machine import machine_info

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # side by side in one invocation: 1 process with all threads, 1 process with 1 thread, 2 processes
        for i, (n, threads) in enumerate(((1, None), (1, "1"), (2, None))):
            run, result = Path(tmp) / f"run{i}", Path(tmp) / f"result{i}.json"
            env = dict(os.environ, **({"OMP_NUM_THREADS": threads} if threads else {}))
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                            __file__, "--worker", "--run-dir", str(run), "--result", str(result),
                            "--steps", str(args.steps), "--batch-size", str(args.batch_size)], check=True, env=env)
            rows.append(json.loads(result.read_text()))
    report = {"model": "vae (digits 32 px, default VAEConfig)", "global_batch": args.batch_size, "steps": args.steps,
              "warmup_steps_left_out": WARMUP, "load_avg_1min": os.getloadavg()[0], "machine": machine_info(),
              "runs": rows}
    Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| processes | threads each | step ms (median) | p90 | steps/s | all_reduce ms | comm share |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['processes']} | {r['threads_per_process']} | {r['step_ms_median']:.1f} | {r['step_ms_p90']:.1f} "
              f"| {r['steps_per_s']:.2f} | {r['allreduce_ms_median']:.2f} | {100 * r['communication_share']:.1f}% |"
              for r in rows]
    print("\n".join(lines))
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
