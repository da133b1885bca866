"""What `tune` and its filter tuning share: a candidate engine, the PSNR gate's measure, and timing candidates
side by side."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .bench import time_in_turn
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
    """{label: p50 ms}: every candidate warmed, then all timed in turn in short bursts (bench.time_in_turn), so a
    burst of load from another process lands on every candidate alike, not on one candidate's span."""
    for candidate in found:
        for _ in range(WARMUP):
            candidate.run(z)
    timed, failed = time_in_turn({c.label: (lambda c=c: c.run(z)) for c in found}, seconds, min_repeats=3)
    if failed:
        label, error = next(iter(failed.items()))
        raise RuntimeError(f"{label} failed while timed: {type(error).__name__}: {error}") from error
    return {label: float(np.median(times)) * 1e3 for label, times in timed.items()}


# What a user opens without latentforge (the bench's peers): a default onnxruntime session, OpenVINO at f32, the
# plain module at bf16 with channels_last, torch.compile. Another setup must beat the fastest of these by more
# than MARGIN to be picked: within it, a tuning run's own timing noise decides (the faces decoder at batch 1,
# ~0.25 ms: one intra-op thread won the tune by a hair and then lost to the default session by 17 % in the bench).
INCUMBENTS = ("onnxruntime fp32", "openvino fp32", "torch bf16 plain", "torch fp32 compile")
MARGIN = 0.05


def pick(timings: dict[str, float]) -> str:
    """The label to keep from one batch size's p50 timings (ms): the fastest, unless it is not one of the
    INCUMBENTS and the fastest incumbent is within MARGIN of it."""
    fastest = min(timings, key=timings.get)
    incumbents = [label for label in timings if label in INCUMBENTS]
    if fastest in INCUMBENTS or not incumbents:
        return fastest
    incumbent = min(incumbents, key=timings.get)
    return incumbent if timings[incumbent] <= timings[fastest] * (1 + MARGIN) else fastest
