"""The classic mode-collapse picture: generated 2-D samples over the true modes and their 3-std circles."""
from __future__ import annotations

import os

import numpy as np

from latentforge.files import atomic_write

from .modes import HQ_STDS


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
