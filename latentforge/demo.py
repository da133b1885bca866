"""`latentforge demo`: the whole pipeline on the built-in faces data, in a couple of minutes on a laptop CPU.

Shipped weights (trained by `latentforge train`, the exact command is in the file's
metadata) -> attribute directions from the faces' factor labels -> ONNX export checked
against PyTorch -> samples, a latent walk and an "eyes open" edit strip drawn by the
exported engine -> training curves -> the benchmark table.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import atomic_write_bytes

WEIGHTS = Path(__file__).parent / "weights"
SHIPPED = WEIGHTS / "faces_vae.safetensors"
SHIPPED_LOG = WEIGHTS / "faces_vae.log.jsonl"
SHIPPED_GAN = WEIGHTS / "faces_gan.safetensors"
SHIPPED_GAN_LOG = WEIGHTS / "faces_gan.log.jsonl"
COMPARE_TABLE = "faces_compare.json"   # written by benchmarks/compare_faces.py
EDIT_AMOUNTS = (0.0, 0.5, 1.0, 1.5, 2.0)
# (heading, row key, format) of the comparison table; a missing value prints as "n/a"
COLUMNS = (("FD (domain features)", "fd", "{:.3f}"), ("precision", "precision", "{:.3f}"),
           ("recall", "recall", "{:.3f}"), ("FD (readout)", "fd_readout", "{:.3f}"),
           ("precision / recall (readout)", "precision_recall_readout", "{precision:.3f} / {recall:.3f}"),
           ("sharpness (Laplacian, x real)", "laplacian_ratio", "{:.2f}"),
           ("high-freq. energy (x real)", "high_frequency_ratio", "{:.2f}"), ("bits/dim", "bits_per_dim", "{:.3f}"),
           ("decode ms, batch 1 (p50 / p90)", "decode", "{p50_ms:.3f} / {p90_ms:.3f}"),
           ("parameters", "params", "{:,}"))


def _say(text: str) -> None:
    print(text, flush=True)


def _train(out: Path, steps: int) -> tuple[Path, Path]:
    """Train a faces VAE with the shipped model's recipe (its config, read from the shipped file)."""
    from latentforge.checkpoint import read_info
    from latentforge.training.train import OWN_FLAGS, TrainConfig, train

    recipe = read_info(SHIPPED).config
    options = {k: v for k, v in recipe.items() if k not in OWN_FLAGS}
    run = out / "run"
    result = train(TrainConfig(kind="vae", data="faces", out=str(run), steps=steps, resume=True,
                               latent_dim=recipe["latent_dim"], model_options=options,
                               sample_every=max(steps // 4, 1), checkpoint_every=max(steps // 10, 1),
                               command=f"latentforge demo --train --steps {steps}"))
    return Path(result.checkpoint), run / "log.jsonl"


def comparison_lines(report: dict) -> list[str]:
    """The markdown of benchmarks/compare_faces.py's report: the table and what its columns mean."""
    def cell(row: dict, key: str, fmt: str) -> str:
        value = row.get(key)
        if value is None:
            return "n/a"
        return fmt.format(**value) if isinstance(value, dict) else fmt.format(value)

    lines = [f"# VAE vs β-VAE vs VQ-VAE + prior vs GAN on held-out faces (n = {report['n']})", "",
             "| model | " + " | ".join(c[0] for c in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    lines += [f"| {r['name']} | " + " | ".join(cell(r, key, fmt) for _, key, fmt in COLUMNS) + " |"
              for r in report["rows"]]
    vq = [r for r in report["rows"] if "sample_with_prior" in r]
    lines += ["", f"FD (domain features), precision and recall (Kynkäänniemi et al. 2019, k=3): in {report['features']}"
              " (the features of `latentforge evaluate`), samples (seed 0) against as many held-out test faces; "
              "FD and precision / recall (readout): the same measures in the readout CNN's features. Not FID. "
              "The real-faces row is the floor at this sample size.",
              "Sharpness: mean squared Laplacian and share of spectral power above half the Nyquist frequency, "
              "each divided by the held-out faces' (1.00 = as sharp as the data).",
              "bits/dim: the VAEs' IWAE bound on held-out faces (8-bit bins); a GAN and a VQ-VAE with a "
              "deterministic encoder have no likelihood bound here (n/a).",
              "Decode: one latent -> one 64 px image on onnxruntime (one session, threads = physical cores)"
              + (f"; the VQ-VAE's is its decoder alone, sampling its 16x16 codes with the prior takes "
                 f"{vq[0]['sample_with_prior']['p50_ms']:.1f} ms more per image" if vq else "")
              + ". Parameters: those that run to make a sample (decoder or generator; VQ: prior, codebook, decoder).",
              f"Best FD: {report['best']} ({report['best_grid']})."]
    return lines


def print_comparison() -> dict:
    """Print the committed VAE / β-VAE / VQ-VAE / GAN table (benchmarks/compare_faces.py) and return it."""
    report = json.loads((WEIGHTS / COMPARE_TABLE).read_text())
    _say("\n".join(comparison_lines(report)))
    _say(f"(measured by: {report['command']}; {report['machine']['cpu']}, {report['machine']['date']})")
    return report


def gan_grids(vae_engine, out: Path) -> dict:
    """The shipped GAN's samples, 32 VAE samples above 32 GAN samples from the same seed, and the GAN's training
    curves (D(x) and D(G(z)) against the 0.5 equilibrium)."""
    from latentforge import load
    from latentforge.images import save_grid
    from latentforge.training.plots import plot_curves, read_log

    gan = load(SHIPPED_GAN)
    paths = {"gan_samples": out / "gan_samples.png", "vae_vs_gan": out / "vae_vs_gan.png",
             "gan_curves": out / "gan_curves.png"}
    save_grid(gan.sample(64, seed=0), paths["gan_samples"], nrow=8, scale=2)
    save_grid(np.concatenate([vae_engine.sample(32, seed=0), gan.sample(32, seed=0)]), paths["vae_vs_gan"],
              nrow=8, scale=2)
    plot_curves(read_log(SHIPPED_GAN_LOG), gan.kind, paths["gan_curves"])
    return paths


def edit_strip(engine, model, info, data, attribute: str, direction: np.ndarray, rows: int = 6):
    """Held-out faces that score low on `attribute`, edited by each amount in EDIT_AMOUNTS.

    Returns (uint8 grid images [rows * (1 + amounts), H, W, C], per-amount ground-truth readings or None).
    """
    from latentforge.training.data import faces
    from latentforge.training.attributes import encode_images

    images, attrs = data.get("test", np.arange(400))
    column = data.attribute_names.index(attribute)
    pick = np.argsort(attrs[:, column])[:rows]
    mu = encode_images(model, images[pick], info.value_range)
    edited = [engine.decode(mu + a * direction) for a in EDIT_AMOUNTS]
    tiles = np.stack([images[pick]] + edited, axis=1).reshape(-1, *images.shape[1:])
    readings = None
    if attribute == "eyes_open" and data.name == "faces":
        readings = [float(faces.measure_eyes_open(e, attrs[pick]).mean()) for e in edited]
    return tiles, readings


def run_demo(out: str | Path = "demo_out", train: bool = False, steps: int = 1500, bench: bool = True) -> dict:
    from latentforge import interpolate, latents, load
    from latentforge.checkpoint import load_checkpoint, save_checkpoint
    from latentforge.export import export_onnx
    from latentforge.images import save_grid
    from latentforge.training.attributes import attribute_directions
    from latentforge.training.data import open_data
    from latentforge.training.plots import plot_curves, read_log

    start = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    if train:
        _say(f"training a faces VAE for {steps} steps into {out / 'run'} ...")
        ckpt, log = _train(out, steps)
    else:
        ckpt, log = SHIPPED, SHIPPED_LOG
    model, info = load_checkpoint(ckpt)
    _say(f"model: {info.kind} {info.config['image_size']}px, latent_dim {info.config['latent_dim']}, "
         f"step {info.step}, trained with: {info.extra.get('command', '?')}")

    data = open_data("faces", image_size=info.config["image_size"])
    directions = attribute_directions(model, info.value_range, data)
    extra = dict(info.extra, attributes=json.dumps({k: v.tolist() for k, v in directions.items()}))
    paths = {"checkpoint": out / "faces_vae.safetensors"}
    save_checkpoint(paths["checkpoint"], model, data=info.data, step=info.step, extra=extra)

    paths["onnx"] = out / "faces_vae.onnx"
    exported = export_onnx(paths["checkpoint"], paths["onnx"])
    for p in exported.parity:
        _say("parity " + p.line())
    engine = load(paths["onnx"])

    paths["samples"] = out / "samples.png"
    save_grid(engine.sample(64, seed=0), paths["samples"], nrow=8, scale=2)

    paths["interpolation"] = out / "interpolation.png"
    walks = [engine.decode(interpolate(*latents(2, engine.latent_dim, seed=s), 10)) for s in (1, 2, 3)]
    save_grid(np.concatenate(walks), paths["interpolation"], nrow=10, scale=2)

    paths["edit"] = out / "edit_eyes_open.png"
    tiles, readings = edit_strip(engine, model, info, data, "eyes_open", directions["eyes_open"])
    save_grid(tiles, paths["edit"], nrow=1 + len(EDIT_AMOUNTS), scale=2)
    if readings:
        _say("eyes_open edit, ground-truth eye openness read from the pixels: " +
             ", ".join(f"+{a:g}: {r:.2f}" for a, r in zip(EDIT_AMOUNTS, readings)))

    _say("\nthe Forger: the shipped faces GAN, and the seed's comparison on held-out faces")
    paths.update(gan_grids(engine, out))
    _say(f"top 4 rows VAE, bottom 4 rows GAN: {paths['vae_vs_gan']}")
    print_comparison()

    paths["curves"] = out / "curves.png"
    if log.exists():
        plot_curves(read_log(log), info.kind, paths["curves"])
        atomic_write_bytes(out / "train_log.jsonl", log.read_bytes())
    else:
        del paths["curves"]

    if bench:
        from latentforge.runtime.bench import run_bench
        from latentforge.runtime.tune import tune

        # measure this machine first, as `latentforge tune` would: without a record `auto` on a checkpoint is
        # torch fp32, which onnxruntime beat 3.6x at batch 1 on a 2-core EPYC
        _say("tuning on this machine (latentforge tune: every engine, a 40 dB gate, the fastest kept) ...")
        record, where = tune(paths["checkpoint"], batches=(1, 16, 128), seconds=8.0, compile=False)
        paths["tune_record"] = where
        _say(f"tuned in {record.seconds:.0f} s: " + ", ".join(
            f"batch {b}: {w.backend} {w.precision}" for b, w in sorted(record.winners.items())) + f" ({where})")
        _say("benchmarking (batch 1, 16, 128) ...")
        report = run_bench(paths["checkpoint"], batches=(1, 16, 128), min_time=0.3)
        paths["bench"] = out / "bench.txt"
        atomic_write_bytes(paths["bench"], (report.table() + "\n").encode())
        atomic_write_bytes(out / "bench.json", json.dumps(report.to_json(), indent=2).encode())
        _say(report.table())

    seconds = time.perf_counter() - start
    _say(f"\ndemo finished in {seconds:.0f} s; wrote:")
    for name, path in paths.items():
        _say(f"  {name:14s} {path}")
    return {"seconds": seconds, "paths": paths, "eyes_open_readings": readings}
