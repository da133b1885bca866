"""kill -9 at 20 random points of a training run, for vae, dcgan, wgan-gp and vqvae: each killed run is resumed to
the end and compared, bit for bit, with one uninterrupted run (tests/kill_points.py; CI runs 2 points per kind).

    python benchmarks/kills.py [--points 20] [--seed 20240601] [--out benchmarks/results]

Writes results/kills.md and kills.json: per kind, every point's delay, whether the kill landed (the child was
still running), and whether the resumed run ended identical.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kill_points import KINDS, STEPS, kill_and_resume  # noqa: E402

from latentforge.files import write_report  # noqa: E402
from latentforge.runtime.machine import machine_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    start, results = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in sorted(KINDS):
            results.append(kill_and_resume(kind, Path(tmp) / kind, args.points, args.seed))
            print(kind, "done", flush=True)
    lines = ["# Random kills during training", "",
             f"`python benchmarks/kills.py --points {args.points} --seed {args.seed}`: per kind, one uninterrupted "
             f"run of {STEPS} steps (a checkpoint every step), then {args.points} runs killed with SIGKILL after a "
             "delay drawn uniformly from (0, 0.95 x the uninterrupted run's wall time), each resumed to the end "
             "and compared with the uninterrupted run (weights and optimizer state, every tensor, `torch.equal`).",
             "A kill drawn after the child had already finished (a run faster than the measured one) is drawn "
             "again, up to 5 times; `attempts` in kills.json.", "",
             "| kind | data | points | kills landed | resumed identical | uninterrupted run s |",
             "|---|---|---|---|---|---|"]
    for r in results:
        points = r["points"]
        lines.append(f"| {r['kind']} | {KINDS[r['kind']]['data']} | {len(points)} | "
                     f"{sum(p['killed'] for p in points)} | "
                     f"{sum(p['resume_exit'] == 0 and p['difference'] is None for p in points)} | "
                     f"{r['uninterrupted_s']} |")
    bad = [(r["kind"], p) for r in results for p in r["points"] if p["resume_exit"] != 0 or p["difference"]]
    lines += ["", "Differences: " + ("none." if not bad else "; ".join(f"{k}: {p}" for k, p in bad)),
              "", f"Total wall time {time.perf_counter() - start:.0f} s, delays in kills.json."]
    write_report(args.out, "kills", lines, {"machine": machine_info(), "points": args.points, "seed": args.seed,
                                            "results": results},
                 machine_info().get("cpu", ""))


if __name__ == "__main__":
    main()
