"""Measured latent edits, edit strips, a traversal grid and the 2-D digits scatter -> benchmarks/results/edits/.

    python benchmarks/edits.py --vae latentforge/weights/faces_vae.safetensors \
        --vae benchmarks/results/models/faces_beta4.safetensors --digits-2d benchmarks/results/models/digits_2d.safetensors

For each faces VAE: attribute directions from 2000 training faces (mean posterior mean of the
high half minus the low half), then on held-out faces in the low half of each attribute, the
edit z += a * d for a in 0..2, read back by a readout CNN trained on the faces labels (all 9
factors) and, for eyes_open, by the data set's exact pixel measure. Changes are fractions of
each factor's range, relative to a = 0.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from latentforge.checkpoint import load_checkpoint
from latentforge.files import write_report
from latentforge.images import save_grid, to_uint8
from latentforge.runtime.machine import machine_info
from latentforge.training.attributes import attribute_directions, encode_images
from latentforge.training.data import open_data
from latentforge.training.evaluate.edit_measure import AMOUNTS, edit_row, edited, low_half
from latentforge.training.evaluate.readout import readout_for

HELD_OUT = 1000


def strips(model, value_range, images, factors, directions, out: Path, tag: str) -> None:
    """One PNG per attribute: 6 held-out faces (rows) from the low half, edited by each amount (columns)."""
    for name, d in directions.items():
        pick = low_half(factors, name)[:6]
        outs = edited(model, value_range, images[pick], d, AMOUNTS)
        rows = np.stack([images[pick]] + outs, axis=1).reshape(-1, *images.shape[1:])   # original, then amounts
        save_grid(rows, out / f"{tag}_edit_{name}.png", nrow=len(AMOUNTS) + 1, scale=2)


@torch.inference_mode()
def traversal(model, value_range, image, kl_order, out: Path, tag: str, dims: int = 8) -> None:
    """Rows: the top `dims` latent dimensions by KL; columns: that dimension set to -3..3 from a face's mean."""
    mu = encode_images(model, image[None], value_range)[0]
    values = np.linspace(-3, 3, 7, dtype=np.float32)
    z = np.repeat(mu[None], dims * len(values), 0).reshape(dims, len(values), -1)
    for row, dim in enumerate(kl_order[:dims]):
        z[row, :, dim] = values
    images = to_uint8(model.decode(torch.from_numpy(z.reshape(-1, z.shape[-1]))).numpy(), value_range)
    save_grid(images, out / f"{tag}_traversal.png", nrow=len(values), scale=2)


@torch.inference_mode()
def kl_per_dim(model, value_range, images) -> np.ndarray:
    from latentforge.images import from_uint8

    mu, logvar = model.encode(torch.from_numpy(from_uint8(images, value_range)))
    return (0.5 * (mu.square() + logvar.exp() - 1 - logvar)).mean(0).numpy()


def scatter(path: str, out: Path) -> None:
    """Posterior means of the held-out digits under a 2-D VAE, coloured by class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    model, info = load_checkpoint(path)
    data = open_data("digits", image_size=info.config["image_size"])
    images, labels = data.get("test", np.arange(data.size("test")))
    mu = encode_images(model, images, info.value_range)
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = ax.scatter(mu[:, 0], mu[:, 1], c=labels[:, 0], cmap="tab10", s=10)
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set_title(f"2-D VAE posterior means, {len(images)} held-out digits")
    fig.savefig(out / "digits_2d_scatter.png", dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", action="append", required=True, help="faces VAE checkpoint (repeat)")
    parser.add_argument("--digits-2d", help="a digits VAE with latent_dim 2, for the scatter plot")
    parser.add_argument("--out", default="benchmarks/results/edits")
    parser.add_argument("--readout-steps", type=int, help="train a readout this long (default: the shipped one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    faces = open_data("faces")
    readout, score = readout_for(faces, args.readout_steps)
    images, factors = faces.get("test", np.arange(HELD_OUT))
    report = {"machine": machine_info(), "readout_r2": score, "amounts": list(AMOUNTS), "models": {}}
    lines = ["# Measured latent edits on held-out faces", "",
             "Readout CNN held-out R² per factor: " + ", ".join(f"{k[3:]} {v:.2f}" for k, v in score.items()), "",
             "Each row: held-out faces in the low half of the attribute, z = mu + a * d for a = "
             f"{', '.join(map(str, AMOUNTS))}; changes from a = 0 to a = {AMOUNTS[-1]}, as fractions of each "
             "factor's range. 'eyes px' is faces.measure_eyes_open (exact ground truth from pixels).", ""]
    for path in args.vae:
        model, info = load_checkpoint(path)
        beta = json.loads(info.extra.get("train", "{}")).get("beta", "?")
        tag = f"beta{beta:g}" if isinstance(beta, (int, float)) else Path(path).parent.name
        directions = attribute_directions(model, info.value_range, faces)
        rows = [edit_row(model, info.value_range, images, factors, name, d, readout) for name, d in directions.items()]
        report["models"][tag] = {"checkpoint": str(path), "rows": rows}
        lines += [f"## {tag}: `{path}` (latent_dim {info.config['latent_dim']}, beta {beta})", "",
                  "| attribute | faces | own factor change | monotonic in a | largest other factor | its change |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            own = f"{r['own_change']:+.3f}"
            if "pixel_change" in r:
                own += f" (eyes px {r['pixel_measure'][0]:.2f} → {r['pixel_measure'][-1]:.2f})"
            mono = str(r["monotonic"]) + (f" (px {r['pixel_monotonic']})" if "pixel_monotonic" in r else "")
            lines.append(f"| {r['attribute']} | {r['images']} | {own} | {mono} | {r['largest_other']} | "
                         f"{r['largest_other_change']:+.3f} |")
        lines.append("")
        strips(model, info.value_range, images, factors, directions, out, tag)
        traversal(model, info.value_range, images[0], np.argsort(-kl_per_dim(model, info.value_range, images)),
                  out, tag)
    if args.digits_2d:
        scatter(args.digits_2d, out)
        lines += ["Latent scatter of the 2-D digits VAE: `digits_2d_scatter.png`.", ""]
    lines += ["Pictures: `<model>_edit_<attribute>.png` (first column the input, then a = "
              + ", ".join(map(str, AMOUNTS)) + "), `<model>_traversal.png` (rows: top-KL dimensions; columns -3..3)."]
    write_report(out, "edits", lines, report, report["machine"].get("cpu", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
