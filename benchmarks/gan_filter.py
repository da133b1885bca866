"""The GAN filter (gan-encoder: frame -> E -> z + edit -> G) against the VAE filter, on held-out faces.

    python benchmarks/gan_filter.py        # writes benchmarks/results/gan-filter.{md,json} and gan-filter.png
    python benchmarks/gan_filter.py -n 200 --seconds 0.5 --out /tmp/gf   # a quick run

For each model, on the first n faces of the held-out split:
  reconstruction at edit 0   PSNR (dB, uint8) and the readout's 64-d feature distance (mean L2, and FD) to the input
  sharpness                  relative to the real faces (training/evaluate/sharpness.py): the share of spectral power
                             above half of Nyquist, and the Laplacian energy
  eyes_open edit             faces with eyes in the closed half, z + a * d_eyes_open for a = 0, 0.5, 1, 1.5:
                             the data set's exact pixel measure (faces.measure_eyes_open; 0 closed, 1 wide open)
                             and the readout's reading of all 9 factors, whose changes from a = 0 to a = +1.5 are
                             the leaks (fractions of each factor's range)
  speed                      Filter(model, {"eyes_open": 1.5}) single stream, 64x64 uint8 frame in and out, after
                             warm-up, at 1 and 2 threads (benchmarks/filter_bench.py's timing)
Directions are each model's own (its checkpoint's `latentforge.attributes`, from the faces' labels).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from filter_bench import row, table, time_calls   # benchmarks/, the script's own folder

from latentforge import Filter, load
from latentforge.checkpoint import load_checkpoint
from latentforge.demo import SHIPPED, WEIGHTS
from latentforge.files import atomic_write_bytes
from latentforge.images import save_grid
from latentforge.runtime.machine import machine_info
from latentforge.training.data import open_data
from latentforge.training.data.faces import FACTORS, measure_eyes_open
from latentforge.training.evaluate.edit_measure import edited, low_half
from latentforge.training.evaluate.readout import frechet_distance, readout_for
from latentforge.training.evaluate.sharpness import sharpness

GAN_FILTER = WEIGHTS / "faces_gan_filter.safetensors"
AMOUNTS = (0.0, 0.5, 1.0, 1.5)
TARGETS = {"fps": 1000.0, "sharpness_vs_vae": 2.0, "sharpness_vs_real": 0.8}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b) ** 2).reshape(len(a), -1).mean(1)
    return float((10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))).mean())


def _shown(path: Path) -> str:
    """The path relative to the working directory (the repository root) when it is inside it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def quality(name: str, path: Path, images, factors, readout) -> tuple[dict, dict[float, np.ndarray]]:
    """Reconstruction, sharpness and the eyes_open edit of one model; also its edited closed-eye faces."""
    module, info = load_checkpoint(path)
    direction = load(path, backend="torch").attributes["eyes_open"]
    recon = edited(module, info.value_range, images, np.zeros_like(direction), (0.0,))[0]
    real_features, recon_features = readout.features(images), readout.features(recon)
    pick = low_half(factors, "eyes_open")
    outs = edited(module, info.value_range, images[pick], direction, AMOUNTS)
    span = readout.high - readout.low
    read = np.stack([readout.factors(o).mean(0) for o in outs]) / span
    change = read[-1] - read[0]
    own = FACTORS.index("eyes_open")
    leaks = {f: float(change[j]) for j, f in enumerate(FACTORS) if j != own}
    result = {
        "model": name, "checkpoint": _shown(path), "kind": info.kind, "latent_dim": int(info.config["latent_dim"]),
        "parameters": sum(p.numel() for p in module.parameters()),
        "psnr_db": psnr(recon, images),
        "feature_l2": float(np.linalg.norm(recon_features - real_features, axis=1).mean()),
        "feature_fd": frechet_distance(recon_features, real_features),
        "sharpness_recon": sharpness(recon, images),
        "sharpness_edit_1p5": sharpness(outs[-1], images[pick]),
        "eyes_faces": len(pick), "amounts": list(AMOUNTS),
        "eyes_input_truth": float(factors[pick, own].mean()),
        "eyes_pixel_input": float(measure_eyes_open(images[pick], factors[pick]).mean()),
        "eyes_pixel": [float(measure_eyes_open(o, factors[pick]).mean()) for o in outs],
        "eyes_readout": read[:, own].tolist(), "eyes_readout_change": float(change[own]),
        "leaks": leaks, "largest_leak": max(leaks, key=lambda k: abs(leaks[k])),
    }
    return result, dict(zip(AMOUNTS, outs))


def speed(name: str, path: Path, seconds: float) -> list[dict]:
    frames = list(np.random.default_rng(0).integers(0, 256, (64, 64, 64, 3), dtype=np.uint8))
    rows = []
    for threads in (1, 2):
        f = Filter(load(path, threads=threads), {"eyes_open": 1.5})
        f.stats.__init__()   # the graph's export and first run are not the steady state
        times, fps = time_calls(f, frames, seconds)
        rows.append(row(name, f"latentforge Filter ({f.backend} graph)", threads, frames[0].shape, times, fps,
                        f.stats))
        print(name, threads, f"{fps:.0f} frames/s", flush=True)
    for r in rows:
        r["gflops_at_p50"] = None
    return rows


def strip(images, factors, edits: dict[str, dict[float, np.ndarray]], out: Path, rows: int = 8) -> None:
    """Rows of: input (eyes closed), VAE filter at +1.5, GAN filter at +1.5."""
    pick = low_half(factors, "eyes_open")[:rows]
    columns = [images[pick]] + [e[1.5][:rows] for e in edits.values()]
    save_grid(np.stack(columns, axis=1).reshape(-1, *images.shape[1:]), out, nrow=len(columns), scale=3)


def report(results: list[dict], rows: list[dict], machine: dict, args) -> str:
    vae, gan = results
    machine_line = (f"machine: {machine['cpu']}, {machine['physical_cores']} physical cores, 1-min load "
                    f"{machine['load_average_1min']:.1f} (shared with other jobs: speeds are noisy); {machine['date']}")
    setup = (f"{args.n} held-out faces (test split); edits on the {vae['eyes_faces']} with eyes in the closed half; "
             f"`python benchmarks/gan_filter.py -n {args.n} --seconds {args.seconds}`.")
    lines = ["# GAN filter vs VAE filter on held-out faces", "", machine_line, "", setup, "",
             "| | VAE filter | GAN filter | target |", "|---|---:|---:|---|"]

    def line(label, key, fmt, target=""):
        lines.append(f"| {label} | {fmt.format(vae[key])} | {fmt.format(gan[key])} | {target} |")

    line("checkpoint", "checkpoint", "`{}`")
    line("parameters", "parameters", "{:,}")
    line("reconstruction PSNR at edit 0 (dB)", "psnr_db", "{:.2f}")
    line("readout feature distance at edit 0 (mean L2)", "feature_l2", "{:.3f}")
    line("readout FD, reconstructions vs inputs", "feature_fd", "{:.3f}")
    for key, label in (("sharpness_recon", "edit 0"), ("sharpness_edit_1p5", "eyes +1.5")):
        for measure, what in (("high_frequency_ratio", "high-frequency power share"),
                              ("laplacian_ratio", "Laplacian energy")):
            target = "GAN ≥ 0.8 and ≥ 2x VAE" if key == "sharpness_recon" else ""
            lines.append(f"| sharpness at {label}: {what} / real faces' | {vae[key][measure]:.3f} | "
                         f"{gan[key][measure]:.3f} | {target} |")
    for i, a in enumerate(AMOUNTS):
        lines.append(f"| eyes open, pixel truth at {a:+.1f} | {vae['eyes_pixel'][i]:.3f} | {gan['eyes_pixel'][i]:.3f} |"
                     f"{' moves toward open' if a == 1.5 else ''} |")
    lines.append(f"| eyes open, pixel truth of the inputs | {vae['eyes_pixel_input']:.3f} | "
                 f"{gan['eyes_pixel_input']:.3f} | |")
    line("eyes_open readout change 0 → +1.5 (range fraction)", "eyes_readout_change", "{:+.3f}")
    for f in vae["leaks"]:
        lines.append(f"| leak into {f} (readout change 0 → +1.5) | {vae['leaks'][f]:+.3f} | {gan['leaks'][f]:+.3f} | |")
    speed_line = (f"Speed: Filter single stream, 64x64 uint8 frame in and out, eyes_open +1.5, {args.seconds} s timed "
                  f"per row. Target ≥ {TARGETS['fps']:.0f} frames/s on 2 cores.")
    lines += ["", speed_line, "", table(rows), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", default=str(SHIPPED))
    parser.add_argument("--gan", default=str(GAN_FILTER), help="gan-encoder checkpoint")
    parser.add_argument("-n", type=int, default=1000, help="held-out faces")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per speed row")
    parser.add_argument("--out", default="benchmarks/results/gan-filter", help="writes OUT.md, OUT.json, OUT.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = open_data("faces", 64)
    readout, _ = readout_for(data)
    images, factors = data.get("test", np.arange(args.n))
    results, edits, rows = [], {}, []
    for name, path in (("VAE filter", Path(args.vae)), ("GAN filter", Path(args.gan))):
        result, edits[name] = quality(name, path, images, factors, readout)
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "leaks"}), flush=True)
        rows += speed(name, path, args.seconds)
    results[1]["sharpness_vs_vae"] = {m: results[1]["sharpness_recon"][m] / results[0]["sharpness_recon"][m]
                                      for m in ("high_frequency_ratio", "laplacian_ratio")}
    machine = machine_info()
    out = Path(args.out)
    strip(images, factors, edits, out.with_suffix(".png"))
    text = report(results, rows, machine, args)
    ratio = results[1]["sharpness_vs_vae"]
    text += (f"\nGAN sharpness / VAE sharpness at edit 0: {ratio['high_frequency_ratio']:.2f} (high-frequency "
             f"share), {ratio['laplacian_ratio']:.2f} (Laplacian energy); target ≥ {TARGETS['sharpness_vs_vae']}."
             f"\n\n`{out.with_suffix('.png').name}`: each row an input with eyes "
             "in the closed half, the VAE filter at eyes_open +1.5, the GAN filter at eyes_open +1.5.\n")
    atomic_write_bytes(out.with_suffix(".md"), text.encode())
    atomic_write_bytes(out.with_suffix(".json"), json.dumps(
        {"machine": machine, "targets": TARGETS, "models": results, "speed": rows, "n": args.n}, indent=2,
        default=float).encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
