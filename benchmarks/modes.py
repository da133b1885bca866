"""Mode collapse measured the papers' way: gan, wgan-gp and unrolled-gan on ring and grid (10 seeds), stacked-digits.

    python benchmarks/modes.py [--seeds 10] [--stacked-seeds 3] [--kinds gan,wgan-gp,unrolled-gan] [--work runs/modes]

Each ring/grid run is `latentforge train KIND --data D --seed S` with no other flag: the kind's own
defaults for that data (training/recipes/gans.py, POINT_DEFAULTS), one thread; then the VEEGAN/PacGAN
protocol on 2500 samples. stacked-digits runs `--steps N --batch-size 64` with a smaller DCGAN pair
(STACKED_STEPS, STACKED_OPTIONS) and counts modes on 10000 samples with the project's digit classifier.
Runs go seed by seed and are appended to WORK/runs.jsonl with their settings; a run already there with
today's settings is skipped, so a killed benchmark continues where it stopped, and `--seeds 0
--stacked-seeds 0` only redraws. After every run the table is rewritten: OUT/modes.md and OUT/modes.json
(mean +- standard error over the seeds done so far, wall time per run) beside the published rows and
the rows of the previous defaults, and OUT/modes_DATA_KIND.png, the samples of the lowest seed over the
true modes.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

KINDS = ("gan", "wgan-gp", "unrolled-gan")
POINT_DATA = ("ring", "grid")
STACKED_KINDS = ("gan", "wgan-gp", "unrolled-gan")
STACKED_OPTIONS = {"ngf": 32, "ndf": 32}   # a smaller DCGAN pair, so the CPU benchmark stays in budget
STACKED_STEPS = {"gan": 1000, "wgan-gp": 800, "unrolled-gan": 1000}   # unrolled: ~3.5x a gan step (5 D steps ahead)
STACKED_BATCH = 64

# PROTOCOLS.md: PacGAN Table 1 (10 runs, +- s.e.) and VEEGAN Table 1 (5 runs).
PACGAN = [("GAN", "6.3±0.5", "98.2±0.2", "0.45", "17.3±0.8", "94.8±0.7", "0.70"),
          ("ALI", "6.6±0.3", "97.6±0.4", "0.36", "24.1±0.4", "95.7±0.6", "0.14"),
          ("PacGAN2", "7.9±0.1", "95.6±2.0", "0.07", "23.8±0.7", "91.3±0.8", "0.13"),
          ("PacGAN3", "7.8±0.1", "97.7±0.3", "0.10", "24.6±0.4", "94.2±0.4", "0.06"),
          ("PacGAN4", "7.8±0.1", "95.9±1.4", "0.07", "24.8±0.2", "93.6±0.6", "0.04")]
# This table's ring/grid rows under earlier defaults, 10 seeds each. 2026-11-24: `--batch-size 128 --steps N`,
# lr 1e-3, 128-wide MLPs, gp 10, unroll 5; N = 3000 (gan), 1000 (wgan-gp), 800 (unrolled-gan). 2026-12-01: the
# first per-data defaults (batch 64, 1000-3000 steps, 64/128-wide MLPs, no generator average). 2026-12-01 (later):
# wgan-gp at batch 512 (ring) / 256 (grid), 3000 steps, lr 2e-3 / 3e-3, 3 critic steps, gp 0.1, no generator average.
PREVIOUS = [("2026-12-01 (later)", "wgan-gp", "8.0±0.0", "95.6±0.2", "0.00±0.00", "25.0±0.0", "81.1±1.6", "0.02±0.01"),
            ("2026-12-01", "gan", "7.5±0.2", "69.7±7.7", "0.93±0.09", "20.3±1.4", "30.6±5.9", "0.65±0.07"),
            ("2026-12-01", "wgan-gp", "8.0±0.0", "83.8±0.6", "0.00±0.00", "23.5±0.3", "23.9±1.4", "0.40±0.03"),
            ("2026-12-01", "unrolled-gan", "8.0±0.0", "58.1±1.8", "0.49±0.07", "20.9±0.3", "3.3±0.4", "0.49±0.04"),
            ("2026-11-24", "gan", "8.0±0.0", "76.1±2.8", "0.99±0.10", "16.3±0.6", "34.5±4.4", "1.47±0.10"),
            ("2026-11-24", "wgan-gp", "1.4±0.4", "0.1±0.0", "1.33±0.07", "15.4±1.0", "1.6±0.1", "0.71±0.09"),
            ("2026-11-24", "unrolled-gan", "7.5±0.5", "32.4±2.8", "0.51±0.08", "18.1±0.4", "1.5±0.1", "0.52±0.04")]
VEEGAN = [("GAN", "1", "99.3", "", "3.3", "0.5", ""), ("ALI", "2.8", "0.13", "", "15.8", "1.6", ""),
          ("Unrolled GAN", "7.6", "35.6", "", "23.6", "16", ""), ("VEEGAN", "8", "52.9", "", "24.6", "40", "")]


def point_settings(kind: str, data: str) -> dict:
    """What `latentforge train KIND --data D` trains with (the kind's defaults for the data, filled in)."""
    from latentforge.training.train import TrainConfig

    cfg = TrainConfig(kind=kind, data=data, out="unused")
    return {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.learning_rate,
            "lr_decay_start": cfg.lr_decay_start, "critic_steps": cfg.critic_steps, "gp_lambda": cfg.gp_lambda,
            "unroll": cfg.unroll, "ema": cfg.g_ema, "r1": cfg.r1, "model": cfg.model_config({"point_dim": 2}).to_dict()}


def run_one(kind: str, data: str, seed: int, work: Path) -> dict:
    import torch
    from latentforge.training.evaluate.gans import evaluate_gan
    from latentforge.training.train import TrainConfig, train

    from latentforge.checkpoint import read_info

    torch.set_num_threads(1)
    run_dir = work / f"{data}_{kind}_{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    fields = ({} if data in POINT_DATA else
              {"model_options": STACKED_OPTIONS, "steps": STACKED_STEPS[kind], "batch_size": STACKED_BATCH})
    cfg = TrainConfig(kind=kind, data=data, out=str(run_dir), seed=seed, progress=False, device="cpu",
                      command=f"benchmarks/modes.py: {kind} {data} seed {seed}", **fields)
    cfg.sample_every = cfg.checkpoint_every = cfg.steps   # one picture and one checkpoint, at the end
    started = time.perf_counter()
    try:
        result = train(cfg)
    except Exception as e:  # a diverged run is a result too: it counts as no modes
        return {"kind": kind, "data": data, "seed": seed, "failed": f"{type(e).__name__}: {e}",
                "wall_s": time.perf_counter() - started, "steps": cfg.steps, "settings": settings(kind, data)}
    wall = time.perf_counter() - started
    ckpt = result.checkpoint
    scores = evaluate_gan(ckpt, read_info(ckpt), {"seed": 1_000 + seed})
    scores.pop("table")
    scores["sample_seed"] = scores.pop("seed")
    return {"kind": kind, "data": data, "seed": seed, "wall_s": wall, "steps": cfg.steps,
            "batch_size": cfg.batch_size, "lr": cfg.learning_rate, "run_dir": str(run_dir),
            "settings": settings(kind, data), **scores}


def settings(kind: str, data: str) -> dict:
    if data in POINT_DATA:
        return point_settings(kind, data)
    return {"steps": STACKED_STEPS[kind], "batch_size": STACKED_BATCH, "model_options": STACKED_OPTIONS}


def mean_se(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    m = float(np.mean(values))
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return m, se


def fmt(m: float, se: float, digits: int = 1) -> str:
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f}" if math.isnan(se) else f"{m:.{digits}f}±{se:.{digits}f}"


def summarize(runs: list[dict]) -> dict:
    summary = {}
    for data in POINT_DATA + ("stacked-digits",):
        for kind in KINDS:
            rows = [r for r in runs if r["kind"] == kind and r["data"] == data]
            if not rows:
                continue
            ok = [r for r in rows if "failed" not in r]
            modes = [r["modes"] for r in ok] + [0] * (len(rows) - len(ok))
            summary[f"{data}/{kind}"] = {
                "runs": len(rows), "failed": len(rows) - len(ok), "reused": sum(bool(r.get("reused")) for r in rows), "seeds": sorted(r["seed"] for r in rows),
                "modes": mean_se(modes), "hq_percent": mean_se([r.get("hq_percent") for r in ok]),
                "reverse_kl": mean_se([r.get("reverse_kl") for r in ok]),
                "wall_s": float(np.median([r["wall_s"] for r in rows])), "steps": rows[0]["steps"],
                "fd": mean_se([r.get("fd") for r in ok]),
            }
    return summary


def table(summary: dict, machine: dict, stacked_runs: list[dict]) -> str:
    lines = ["# Mode collapse on 2-D data (VEEGAN / PacGAN protocol)", "",
             "2500 samples per run; a sample is high quality (HQ) within 3 std of its nearest mode; a mode is",
             "captured with at least one HQ sample; reverse KL = KL(HQ mode histogram || uniform), nats.",
             "Ours: mean ± standard error over the seeds listed (n runs) of `latentforge train KIND --data D",
             "--seed S` with no other flag (the kind's defaults for the data, listed below), one thread per run,",
             f"{machine.get('jobs', 1)} run(s) at a time; a diverged run counts as 0 modes. Wall time: median per run.",
             "Fewer than 10 runs in a row: the seeds that fit the time this table was given (seeds 0 .. n-1).",
             "`reused`: the kind's defaults did not change since an earlier table, whose runs (and wall times, taken",
             "under that table's run count at a time) are kept (`--reuse`; modes.json's runs name the file).", "",
             "| model | ring modes /8 | ring HQ % | ring rev-KL | grid modes /25 | grid HQ % | grid rev-KL | runs | steps | wall s/run (ring, grid) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        cells, runs, walls, steps = [], [], [], []
        for data in POINT_DATA:
            s = summary.get(f"{data}/{kind}")
            if s is None:
                cells += ["–"] * 3
                continue
            cells += [fmt(*s["modes"]), fmt(*s["hq_percent"]), fmt(*s["reverse_kl"], digits=2)]
            runs.append(f"{s['runs']}" + (" reused" if s["reused"] else "")
                        + (f" ({s['failed']} diverged)" if s["failed"] else ""))
            walls.append(f"{s['wall_s']:.0f}")
            steps.append(str(s["steps"]))
        lines.append(f"| **latentforge {kind}** | " + " | ".join(cells)
                     + f" | {', '.join(runs)} | {', '.join(steps)} | {', '.join(walls)} |")
    lines += [f"| defaults of {day}: {name} | " + " | ".join(row) + " | 10, 10 | | |" for day, name, *row in PREVIOUS]
    lines += [f"| PacGAN Table 1: {name} | " + " | ".join(row) + " | 10 | | |" for name, *row in PACGAN]
    lines += [f"| VEEGAN Table 1: {name} | " + " | ".join(c or "–" for c in row) + " | 5 | | |" for name, *row in VEEGAN]
    lines += ["", "The defaults each row ran with (training/recipes/gans.py, POINT_DEFAULTS; the rest as in docs/gans.md):",
              "", "| kind | data | steps | batch | lr | lr decay from | critic steps | gp λ | unroll | MLP (hidden × depth, z) "
              "| point scale | G average (ema) | R1 γ |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        for data in POINT_DATA:
            if f"{data}/{kind}" in summary:
                t = point_settings(kind, data)
                m = t["model"]
                gp = f"{t['gp_lambda']:g}" if kind == "wgan-gp" else "–"
                unroll = t["unroll"] if kind == "unrolled-gan" else "–"
                lines.append(f"| {kind} | {data} | {t['steps']} | {t['batch_size']} | {t['lr']:g} | "
                             f"{t['lr_decay_start']:g} | {t['critic_steps'] or 1} | {gp} | {unroll} | "
                             f"{m['hidden']} × {m['depth']}, {m['latent_dim']} | {m['point_scale']:g} | "
                             f"{t['ema'] or '–'} | {t['r1'] or '–'} |")
    lines += targets(summary)
    stacked = {k: v for k, v in summary.items() if k.startswith("stacked-digits/")}
    if stacked:
        lines += ["", "## Stacked digits (scikit-learn 8×8 digits stacked as RGB, 1000 modes)", "",
                  "Modes read by the project's digit classifier on 10000 samples; KL(class histogram || uniform).",
                  "Comparable to Stacked MNIST in method, not in numbers (different digits, different classifier).",
                  f"DCGAN pair with {STACKED_OPTIONS} at 32 px, batch {STACKED_BATCH}.",
                  *sorted({f"Runs: {r['note']}." for r in stacked_runs if r.get("note")}), "",
                  "| model | modes /1000 | KL | FD (domain features) | runs | steps | wall s/run |",
                  "|---|---|---|---|---|---|---|"]
        for key, s in stacked.items():
            lines.append(f"| latentforge {key.split('/')[1]} | {fmt(*s['modes'])} | {fmt(*s['reverse_kl'], digits=2)} "
                         f"| {fmt(*s['fd'], digits=2)} | {s['runs']} | {s['steps']} | {s['wall_s']:.0f} |")
    lines += ["", "## Machine", "", "```", json.dumps(machine, indent=1), "```", ""]
    return "\n".join(lines)


# issue 15's targets for the defaults (at least WGAN-GP's published numbers): (metric, at least / at most, value)
TARGETS = {"ring": [("modes", ">=", 8.0), ("hq_percent", ">=", 98.0), ("reverse_kl", "<=", 0.05)],
           "grid": [("modes", ">=", 24.9), ("hq_percent", ">=", 95.0), ("reverse_kl", "<=", 0.04)]}


def targets(summary: dict) -> list[str]:
    """Each kind's means against the targets: met, or missed by how much."""
    lines = ["", "Targets for the defaults (10 seeds): ring 8.0 modes, HQ ≥ 98 %, rev-KL ≤ 0.05; grid ≥ 24.9 modes, "
             "HQ ≥ 95 %, rev-KL ≤ 0.04. Means of the rows above:", "",
             "| kind | data | modes | HQ % | rev-KL |", "|---|---|---|---|---|"]
    for kind in KINDS:
        for data, goals in TARGETS.items():
            s = summary.get(f"{data}/{kind}")
            if s is None:
                continue
            cells = []
            for metric, sense, goal in goals:
                value = s[metric][0]
                short = goal - value if sense == ">=" else value - goal
                digits = 2 if metric == "reverse_kl" else 1
                cells.append(f"{value:.{digits}f}: " + ("met" if short <= 0 else f"missed by {short:.{digits}f}"))
            lines.append(f"| {kind} | {data} | " + " | ".join(cells) + " |")
    return lines


def pictures(runs: list[dict], out: Path, name: str = "modes") -> None:
    from latentforge.training.data import open_data
    from latentforge.training.plots import plot_points
    from latentforge.training.samples import generate

    from latentforge.checkpoint import load_checkpoint

    for data in POINT_DATA:
        for kind in KINDS:
            done = sorted((r for r in runs if r["kind"] == kind and r["data"] == data and "failed" not in r),
                          key=lambda r: r["seed"])
            if not done:
                continue
            r = done[0]
            if not (Path(r["run_dir"]) / "checkpoint.safetensors").exists():   # a reused run: its picture stays
                continue
            model, _ = load_checkpoint(Path(r["run_dir"]) / "checkpoint.safetensors")
            d = open_data(data)
            plot_points(generate(model, 2500, 1_000 + r["seed"]), d.modes, d.std, out / f"{name}_{data}_{kind}.png",
                        title=f"{kind} on {data}, seed {r['seed']}: {r['modes']}/{len(d.modes)} modes, "
                              f"{r['hq_percent']:.0f}% HQ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--stacked-seeds", type=int, default=3, help="seeds for stacked-digits (0 = skip)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, one thread each")
    parser.add_argument("--work", default="runs/modes", help="run folders and runs.jsonl")
    parser.add_argument("--reuse", metavar="MODES_JSON",
                        help="also take the runs of an earlier modes.json whose settings are today's (runs of a kind "
                             "whose defaults did not change), for the seeds WORK does not have")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"),
                        help="folder for modes.md, modes.json and the pictures")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from latentforge.runtime.machine import machine_info

    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log = work / "runs.jsonl"
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if args.reuse:
        runs += reused(Path(args.reuse), runs)
    runs = [r for r in runs if r.get("settings") == settings(r["kind"], r["data"])]   # today's settings only
    done = {(r["kind"], r["data"], r["seed"]) for r in runs}
    kinds = args.kinds.split(",")
    plan = [(k, d, s) for s in range(args.seeds) for d in POINT_DATA for k in kinds]
    plan += [(k, "stacked-digits", s) for s in range(args.stacked_seeds) for k in STACKED_KINDS if k in kinds]
    machine = {**machine_info(), "threads": 1, "jobs": args.jobs, "note": "shared 2-core machine, other jobs running"}
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, kind, data, seed, work) for kind, data, seed in plan
                   if (kind, data, seed) not in done]
        for future in as_completed(futures):
            record = future.result()
            with open(log, "a") as f:
                f.write(json.dumps(record, default=float) + "\n")
            runs.append(record)
            print(f"{record['kind']:>12} {record['data']:>14} seed {record['seed']}: " + ", ".join(
                f"{k} {record[k]:.4g}" if isinstance(record.get(k), float) else f"{k} {record.get(k)}"
                for k in ("modes", "hq_percent", "reverse_kl", "wall_s", "failed") if k in record), flush=True)
            write_results(runs, out, machine)
    write_results(runs, out, machine)   # with --seeds 0: only redraw the table and pictures from WORK
    pictures(runs, out)


def reused(path: Path, runs: list[dict]) -> list[dict]:
    """Runs from an earlier modes.json, marked `reused`. A setting added to latentforge since then is absent from
    them, and they trained as its default does: no generator average (ema 0), no R1 penalty (r1 0), model
    options at their defaults."""
    from dataclasses import fields

    from latentforge.models.gan import GANConfig

    have = {(r["kind"], r["data"], r["seed"]) for r in runs}
    earlier, table = [], json.loads(path.read_text())
    when = str(table.get("machine", {}).get("date", "?"))[:10]
    for r in table["runs"]:
        if (r["kind"], r["data"], r["seed"]) in have:
            continue
        if r["data"] in POINT_DATA:
            r["settings"].setdefault("ema", 0.0)
            r["settings"].setdefault("r1", 0.0)
            for f in fields(GANConfig):
                r["settings"]["model"].setdefault(f.name, f.default)
        earlier.append({**r, "reused": r.get("reused") or f"modes.json of {when}"})
    return earlier


def write_results(runs: list[dict], out: Path, machine: dict, name: str = "modes") -> None:
    summary = summarize(runs)
    (out / f"{name}.json").write_text(json.dumps({"summary": summary, "runs": runs, "machine": machine},
                                               indent=1, default=float))
    stacked_runs = [r for r in runs if r["data"] == "stacked-digits"]
    (out / f"{name}.md").write_text(table(summary, machine, stacked_runs))


if __name__ == "__main__":
    sys.exit(main())
