"""What `tune` and its filter tuning share: a candidate engine, the PSNR gate's measure, and timing candidates
side by side."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .bench import time_calls
from .tune_record import Winner

WARMUP = 2


@dataclass
class Candidate:
    backend: str
    precision: str
    run: Callable[[np.ndarray], np.ndarray]   # z float32 [N, D] -> float32 image [N, C, H, W]
    mode: str = "fused"                       # torch: runtime/torch_backend.MODES

    @property
    def label(self) -> str:
        return Winner(self.backend, self.precision, 0.0, 0.0, self.mode).label


def psnr_db(out: np.ndarray, reference: np.ndarray, peak: float) -> float:
    """PSNR of `out` against `reference` for signals spanning `peak`; NaN anywhere gives -inf (always fails)."""
    if not np.all(np.isfinite(out)):
        return -math.inf
    mse = float(np.mean((out.astype(np.float64) - reference) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def time_side_by_side(found: list[Candidate], z: np.ndarray, seconds: float) -> dict[str, float]:
    """{label: p50 ms}: every candidate warmed, then timed in two alternating rounds; the faster median counts,
    so a burst of load from another process hurts one round of one candidate, not the verdict."""
    for candidate in found:
        for _ in range(WARMUP):
            candidate.run(z)
    best: dict[str, float] = {}
    for _ in range(2):
        for candidate in found:
            p50 = float(np.median(time_calls(candidate.run, z, seconds / 2, min_repeats=3))) * 1e3
            best[candidate.label] = min(best.get(candidate.label, math.inf), p50)
    return best
