"""Polygraphy-style comparison of an output against its reference: max abs, max rel, worst index, PSNR.

numpy only, so the runtime checks a graph's golden output (latentforge/golden.py) without importing torch."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class OutputParity:
    name: str
    shape: list[int]
    max_abs: float
    max_rel: float
    worst_index: list[int]
    psnr_db: float
    atol: float
    rtol: float
    nonfinite: int
    passed: bool
    min_psnr: float | None = None  # the quality gate, when one applies


    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict} {self.name} {self.shape}: max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g} "
                f"at {self.worst_index}, PSNR {self.psnr_db:.1f} dB, non-finite {self.nonfinite} "
                f"(atol {self.atol:g}, rtol {self.rtol:g}" + ("" if self.min_psnr is None else
                                                              f", PSNR >= {self.min_psnr:g} dB") + ")")

    def to_dict(self) -> dict:
        return asdict(self)


def compare(name: str, reference: np.ndarray, actual: np.ndarray, atol: float, rtol: float,
            peak: float = 1.0, min_psnr: float | None = None) -> OutputParity:
    """Pass when |actual - reference| <= atol + rtol * |reference| everywhere, nothing is NaN/Inf and
    (given `min_psnr`) the PSNR reaches it.

    `peak` is the signal range used for PSNR (the width of the model's value range).
    """
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(actual, dtype=np.float64)
    if ref.shape != got.shape:
        return OutputParity(name, list(got.shape), math.inf, math.inf, [], 0.0, atol, rtol, 0, False, min_psnr)
    nonfinite = int((~np.isfinite(got)).sum())
    diff = np.abs(got - ref)
    diff = np.where(np.isfinite(diff), diff, np.inf)
    excess = diff - (atol + rtol * np.abs(ref))
    worst = np.unravel_index(int(np.argmax(excess)), ref.shape) if ref.size else ()
    rel = diff / np.maximum(np.abs(ref), 1e-12)
    mse = float(np.mean(np.square(np.where(np.isfinite(diff), diff, peak)))) if ref.size else 0.0
    psnr = math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)
    passed = nonfinite == 0 and bool(np.all(excess <= 0)) and (min_psnr is None or psnr >= min_psnr)
    return OutputParity(name, list(ref.shape), float(diff.max(initial=0.0)), float(rel.max(initial=0.0)),
                        [int(i) for i in worst], psnr, atol, rtol, nonfinite, passed, min_psnr)
