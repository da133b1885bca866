"""A run's pictures, with matplotlib's Agg canvas (no display, no pyplot state): curves.png from the records of
its log.jsonl, and the classic mode-collapse picture of generated 2-D samples over the true modes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from latentforge.files import atomic_write

from .evaluate.modes import HQ_STDS

# (panel title, [(log key, legend label)]) per model kind; panels whose keys never appear are left out.
PANELS = {
    "vae": [("training loss (nats/image)", [("loss", "loss"), ("recon", "reconstruction")]),
            ("KL(q(z|x) || N(0, I)) (nats/image)", [("kl", "KL")]),
            ("held-out ELBO (nats/image)", [("test_elbo", "ELBO")])],
    "dcgan": [("losses", [("loss_d", "D"), ("loss_g", "G")]),
              ("discriminator outputs", [("d_x", "D(x)"), ("d_g_z", "D(G(z))")])],
    "vqvae": [("reconstruction MSE", [("recon_mse", "MSE")]),
              ("codebook usage", [("perplexity", "perplexity"), ("unused_codes", "unused codes in batch")]),
              ("commitment (per latent element)", [("commitment", "commitment")])],
    "prior": [("next-code loss", [("bits_per_code", "bits / code")])],
    "gan-encoder": [("reconstruction", [("pixel_mse", "pixel MSE"), ("latent_mse", "latent MSE E(G(z)) vs z")]),
                    ("discriminator-feature loss", [("feature", "feature")]),
                    ("held-out reconstruction PSNR (dB)", [("test_psnr", "PSNR")])],
}
_COVERAGE = [("modes covered (collapse detector)", [("modes", "modes")]),
             ("reverse KL to uniform over modes (nats)", [("reverse_kl", "reverse KL")]),
             ("high-quality samples (%)", [("hq_percent", "HQ %")])]
PANELS["gan"] = PANELS["unrolled-gan"] = PANELS["dcgan"] + _COVERAGE
PANELS["wgan-gp"] = [("losses", [("loss_d", "critic"), ("loss_g", "G")]),
                     ("Wasserstein estimate E[C(x)] - E[C(G(z))]", [("wasserstein", "W estimate"), ("gp", "penalty")])
                     ] + _COVERAGE


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a run's log.jsonl (each has "step"), less a last line cut short by a kill."""
    path = Path(path)
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if isinstance(r, dict) and isinstance(r.get("step"), int)]


def plot_curves(records: list[dict], kind: str, path: str | os.PathLike) -> None:
    """Write the curves of `records` (dicts with "step" and metric keys) as a PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(title, lines) for title, lines in PANELS[kind] if any(key in r for r in records for key, _ in lines)]
    fig = Figure(figsize=(5 * max(len(panels), 1), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (title, lines) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key, label in lines:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, label=label, marker="o" if len(points) < 3 else None)
        if title == "discriminator outputs":
            ax.axhline(0.5, color="gray", linestyle="--", linewidth=1, label="equilibrium 0.5")
            ax.set_ylim(0, 1)
        if kind == "vae" and title.startswith("held-out"):
            bpd = [(r["step"], r["test_bpd"]) for r in records if "test_bpd" in r]
            if bpd:
                ax.set_title(f"{title}; last {bpd[-1][1]:.3f} bits/dim", fontsize=10)
        if not ax.get_title():
            ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def plot_points(points: np.ndarray, modes: np.ndarray, std: float, path: str | os.PathLike, title: str = "") -> None:
    """Write a PNG of `points` [n, 2] (blue dots) over `modes` [K, 2] (red circles of radius 3 std), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    fig = Figure(figsize=(4, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    span = np.abs(modes).max() * 1.5 + 10 * std
    shown = np.clip(points, -span, span)   # far-off samples pile up on the border instead of vanishing
    ax.scatter(shown[:, 0], shown[:, 1], s=2, alpha=0.4, color="tab:blue", linewidths=0, label="samples")
    for x, y in modes:
        ax.add_patch(Circle((x, y), HQ_STDS * std, fill=False, color="tab:red", linewidth=0.8))
    ax.scatter(modes[:, 0], modes[:, 1], s=6, color="tab:red", marker="x", linewidths=0.8, label="modes")
    ax.set_xlim(-span, span)
    ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
