"""The seed's comparison on held-out faces: VAE, β-VAE, VQ-VAE + prior and the GAN in one table, with sample grids.

    python benchmarks/compare_faces.py            # the shipped VAE and GAN, the β-VAE and VQ prior of results/models

Every model draws n samples (seed 0) and is scored against the same n held-out test faces:
- FD (domain features), precision and recall (Kynkäänniemi et al. 2019, k = 3) in the features
  `latentforge evaluate` uses for faces (the shipped VAE's posterior mean, training/evaluate/features.py),
  and FD in the readout CNN's features (training/evaluate/readout.py) as a second, model-free view;
- sharpness as a ratio to the held-out faces (training/evaluate/sharpness.py);
- bits/dim where the model has a likelihood bound (the VAEs: IWAE-k on n held-out faces);
- decode latency at batch 1 (onnxruntime, one session, median and p90 of `time_calls`) and the
  parameters that run to make a sample (decoder or generator; the VQ prior with its decoder).

Writes benchmarks/results/compare_faces/{compare_faces.md, compare_faces.json, <model>_samples.png,
compare_faces_grids.png} and the table `latentforge demo` prints (latentforge/weights/faces_compare.json).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from latentforge import latents, load
from latentforge.checkpoint import load_checkpoint
from latentforge.demo import COMPARE_TABLE, comparison_lines
from latentforge.files import atomic_write, atomic_write_bytes, write_report
from latentforge.images import save_grid, to_uint8
from latentforge.runtime.bench import time_calls
from latentforge.runtime.machine import machine_info
from latentforge.training.data import open_data
from latentforge.training.evaluate import readout as eval_readout
from latentforge.training.evaluate import vae as eval_vae
from latentforge.training.evaluate import vq as eval_vq
from latentforge.training.evaluate.features import feature_net, features, frechet_distance, precision_recall
from latentforge.training.evaluate.sharpness import sharpness
from latentforge.training.samples import generate

WEIGHTS = Path(__file__).resolve().parents[1] / "latentforge" / "weights"
MODELS = Path(__file__).resolve().parent / "results" / "models"


def _signed(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] -> float32 [N, C, H, W] in [-1, 1], what the feature networks take."""
    return images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _latency(run, x, seconds: float) -> dict:
    for _ in range(5):
        run(x)
    times = time_calls(run, x, seconds) * 1e3
    return {"p50_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "calls": len(times)}


def vae_entry(path: str, n: int, k: int) -> dict:
    model, info = load_checkpoint(path)
    beta = json.loads(info.extra.get("train", "{}")).get("beta", 1.0)
    samples = to_uint8(generate(model, n, seed=0), info.value_range)
    bound = eval_vae.evaluate_vae(Path(path), info, {"n": n, "k": k, "mig": False})
    return {"name": "VAE" if beta == 1 else f"β-VAE (β={beta:g})", "checkpoint": path, "samples": samples,
            "bits_per_dim": bound["iwae_bpd"], "bits_per_dim_bound": f"IWAE-{k}, n={bound['n']}",
            "params": _params(model.from_latent) + _params(model.decoder)}


def vq_entry(path: str, n: int) -> dict:
    prior, info = load_checkpoint(path)
    return {"name": f"VQ-VAE K={prior.config.vq.codebook_size} + prior", "checkpoint": path,
            "samples": eval_vq.prior_samples(prior, n, seed=0), "bits_per_dim": None,
            "params": _params(prior) - _params(prior.vqvae.encoder)}


def gan_entry(path: str, n: int) -> dict:
    model, info = load_checkpoint(path)
    samples = to_uint8(generate(model, n, seed=0), info.value_range)
    return {"name": f"GAN ({info.kind}, DCGAN ngf={info.config['ngf']})", "checkpoint": path, "samples": samples,
            "bits_per_dim": None, "params": _params(model.generator)}


def latency(path: str, seconds: float) -> dict:
    """Batch-1 decode on onnxruntime; for a VQ prior, its decoder of one code grid and, apart, sampling one."""
    engine = load(path, backend="onnxruntime")
    if engine.codebook_size:
        codes = engine.sample_codes(1, seed=1)
        return {"decode": _latency(engine.decode_codes, codes, seconds),
                "sample_with_prior": _latency(lambda s: engine.sample(1, seed=s), 1, seconds)}
    return {"decode": _latency(engine.decode, latents(1, engine.latent_dim, seed=1), seconds)}


def cached(make, kind: str, path: str, n: int, cache: Path | None) -> dict:
    """make(path) (an entry with its samples), or the one saved in `cache` for these exact file bytes and n: a
    re-run after a new GAN skips the VQ prior's slow sampling and the VAEs' bounds. No pickle: npz + JSON."""
    if cache is None:
        return make(path)
    key = f"{kind}-{n}-{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}"
    images, fields = cache / f"{key}.npz", cache / f"{key}.json"
    if images.exists() and fields.exists():
        with np.load(images, allow_pickle=False) as f:
            return {**json.loads(fields.read_text()), "samples": f["samples"]}
    entry = make(path)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(images, samples=entry["samples"])
    fields.write_text(json.dumps({k: v for k, v in entry.items() if k != "samples"}, default=float))
    return entry


def score(entry: dict, real: np.ndarray, real_features, net, readout, readout_real) -> dict:
    samples = entry["samples"]
    fake_features = features(net, _signed(samples))
    precision, recall = precision_recall(real_features, fake_features)
    fake_readout = readout.features(samples)
    readout_pr = precision_recall(torch.from_numpy(readout_real).double(), torch.from_numpy(fake_readout).double())
    return {"fd": frechet_distance(net, _signed(real), _signed(samples)), "precision": precision, "recall": recall,
            "fd_readout": eval_readout.frechet_distance(fake_readout, readout_real),
            "precision_recall_readout": {"precision": readout_pr[0], "recall": readout_pr[1]},
            **sharpness(samples, real)}


def grids_figure(panels: list[tuple[str, np.ndarray]], path: Path) -> None:
    """The models' first 16 samples side by side (4 x 4 each), titled, one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(panels), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (title, images) in enumerate(panels):
        tiles = images[:16]
        h, w, c = tiles.shape[1:]
        grid = tiles.reshape(4, 4, h, w, c).transpose(0, 2, 1, 3, 4).reshape(4 * h, 4 * w, c)
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", action="append", help="faces VAE checkpoint (repeat; default the shipped VAE "
                                                       "and results/models/faces_beta4)")
    parser.add_argument("--prior", default=str(MODELS / "faces_prior16.safetensors"), help="VQ prior checkpoint")
    parser.add_argument("--gan", default=str(WEIGHTS / "faces_gan.safetensors"), help="faces GAN checkpoint")
    parser.add_argument("-n", type=int, default=1000, help="held-out faces and samples per model")
    parser.add_argument("--k", type=int, default=16, help="importance samples of the VAEs' IWAE bound")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per latency")
    parser.add_argument("--out", default="benchmarks/results/compare_faces")
    parser.add_argument("--cache", help="keep the VAE and VQ entries here (keyed by file hash) for a re-run")
    parser.add_argument("--table", default=str(WEIGHTS / COMPARE_TABLE), help="the demo's copy of the table")
    args = parser.parse_args(argv)
    vaes = args.vae or [str(WEIGHTS / "faces_vae.safetensors"), str(MODELS / "faces_beta4.safetensors")]
    torch.set_num_threads(1)   # the evaluation; the latency sessions use their own (one per physical core)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()

    faces = open_data("faces")
    real, _ = faces.get("test", np.arange(args.n))
    other, _ = faces.get("train", np.arange(10**6, 10**6 + args.n))
    net, described = feature_net("faces", 3, 64)
    readout, _ = eval_readout.readout_for(faces)
    real_features, readout_real = features(net, _signed(real)), readout.features(real)
    entries = [{"name": "real faces (other training faces)", "samples": other, "bits_per_dim": None}]
    cache = Path(args.cache) if args.cache else None
    entries += [cached(lambda p: vae_entry(p, args.n, args.k), f"vae-k{args.k}", p, args.n, cache) for p in vaes]
    entries += [cached(lambda p: vq_entry(p, args.n), "vq", args.prior, args.n, cache), gan_entry(args.gan, args.n)]
    for entry in entries[1:]:   # timed together, in one run, whatever came from the cache
        entry.update(latency(entry["checkpoint"], args.seconds))
    rows = []
    for entry in entries:
        row = {k: v for k, v in entry.items() if k != "samples"}
        row.update(score(entry, real, real_features, net, readout, readout_real))
        rows.append(row)
        stem = entry["name"].split(" (")[0].split(" K=")[0].lower().replace("-", "").replace("β", "beta_")
        if "checkpoint" in entry:
            row["grid"] = f"{stem}_samples.png"
            save_grid(entry["samples"][:64], out / row["grid"], nrow=8, scale=2)
    grids_figure([(r["name"], e["samples"]) for r, e in zip(rows, entries)], out / "compare_faces_grids.png")
    fitted = [r for r in rows if "checkpoint" in r]
    best = min(fitted, key=lambda r: r["fd"])
    report = {"machine": machine, "n": args.n, "features": described, "rows": rows, "best": best["name"],
              "best_grid": f"benchmarks/results/compare_faces/{best['grid']}", "grids": "compare_faces_grids.png",
              "command": "python benchmarks/compare_faces.py " + " ".join(argv or sys.argv[1:])}
    lines = comparison_lines(report)
    write_report(out, "compare_faces", lines, report, machine["cpu"], timed=True)
    table = {k: report[k] for k in ("n", "features", "rows", "best", "best_grid", "command")}
    table["machine"] = {k: machine[k] for k in ("cpu", "physical_cores", "load_average_1min", "date")}
    atomic_write_bytes(args.table, json.dumps(table, indent=2, default=float).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
