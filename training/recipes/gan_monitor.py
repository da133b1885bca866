"""The collapse detector: at every sample interval, measure mode coverage and save the sample picture.

2-D point data is measured exactly (2500 samples, the protocol's numbers); stacked-digits
with the project's digit classifier; other image sets only get the sample grid. Coverage
that falls below the best seen so far in the run is a warning in the log and the progress bar.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluate.modes import point_mode_stats
from ..plots import plot_points
from ..samples import generate, save_samples

MONITOR_SAMPLES = 2500


def coverage(model, data, seed: int, n: int = MONITOR_SAMPLES) -> tuple[dict, np.ndarray | None]:
    """(mode statistics, the samples) for data whose modes are known; ({}, None) for other data."""
    if hasattr(data, "modes"):
        points = generate(model, n, seed)
        if not np.isfinite(points).all():
            return {"modes": 0}, points
        stats = point_mode_stats(points, data.modes, data.std)
        found = {"modes": stats["modes"], "hq_percent": stats["hq_percent"]}
        if stats["reverse_kl"] is not None:  # how evenly the samples spread over the modes they cover
            found["reverse_kl"] = stats["reverse_kl"]
        return found, points
    if data.name == "stacked-digits":
        from ..evaluate.digit_classifier import stacked_labels

        images = generate(model, n, seed)
        labels = stacked_labels(images)
        return {"modes": int(len(np.unique(labels)))}, None
    return {}, None


def monitor(cfg, model, data, step: int, run_dir: Path, records: list[dict]) -> tuple[dict, str | None]:
    found, points = coverage(model, data, cfg.seed)
    picture = run_dir / f"samples_{step:06d}.png"
    if points is not None:
        plot_points(points, data.modes, data.std, picture,
                    title=f"{cfg.kind} on {data.name}, step {step}: {found['modes']}/{len(data.modes)} modes")
    else:
        save_samples(model, picture, cfg.seed)
    if "modes" not in found:
        return found, None
    earlier = [(r["modes"], r["step"]) for r in records if "modes" in r and "event" not in r]
    best = max(earlier, default=None)
    if best is not None and found["modes"] < best[0]:
        return found, (f"mode coverage fell to {found['modes']} (best {best[0]} at step {best[1]}): "
                       "the generator is collapsing onto fewer modes")
    return found, None
