"""Mode-collapse metrics (VEEGAN / PacGAN protocol), in NumPy.

Points: a sample is high quality (HQ) when it lies within `3 * std` of its nearest mode;
a mode is captured when at least one HQ sample has it as nearest mode; reverse KL is
KL(histogram of HQ samples over modes || uniform). Classes (stacked digits): a mode is a
class the classifier assigns to at least one sample; KL(class histogram || uniform).
"""
from __future__ import annotations

import numpy as np

from latentforge.errors import InputError

HQ_STDS = 3.0


def reverse_kl_to_uniform(counts: np.ndarray) -> float | None:
    """KL(p || uniform over len(counts)) in nats for the histogram `counts`; None for an empty histogram."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return None
    p = counts[counts > 0] / total
    return float(np.sum(p * np.log(p * len(counts))))


def point_mode_stats(points: np.ndarray, modes: np.ndarray, std: float) -> dict:
    """modes captured, HQ fraction and reverse KL of `points` [n, d] against the mixture `modes` [K, d]."""
    points = np.asarray(points, dtype=np.float64)
    modes = np.asarray(modes, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != modes.shape[1] or len(points) == 0:
        raise InputError(f"points must be [n, {modes.shape[1]}] with n >= 1, got {list(points.shape)}")
    if not np.isfinite(points).all():
        raise InputError("points contain NaN or Inf; the generator diverged")
    distance = np.sqrt(((points[:, None, :] - modes[None, :, :]) ** 2).sum(axis=-1))
    nearest = distance.argmin(axis=1)
    hq = distance[np.arange(len(points)), nearest] <= HQ_STDS * std
    counts = np.bincount(nearest[hq], minlength=len(modes))
    return {"modes": int((counts > 0).sum()), "total_modes": len(modes), "hq_percent": 100.0 * float(hq.mean()),
            "reverse_kl": reverse_kl_to_uniform(counts), "counts": counts.tolist()}


def class_mode_stats(labels: np.ndarray, classes: int) -> dict:
    """modes captured (classes seen at least once) and KL(class histogram || uniform) of predicted `labels`."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0 or labels.min() < 0 or labels.max() >= classes:
        raise InputError(f"labels must be a non-empty 1-D array of classes in 0..{classes - 1}")
    counts = np.bincount(labels, minlength=classes)
    return {"modes": int((counts > 0).sum()), "total_modes": classes, "reverse_kl": reverse_kl_to_uniform(counts)}
