"""Bjøntegaard delta rate (G. Bjøntegaard, VCEG-M33, 2001): the average rate difference of a test codec against an
anchor at equal quality, over the quality range both cover.

Each curve's log10(rate) is fitted by a cubic polynomial in the quality (PSNR), both fits are integrated over
the overlap of the two quality ranges, and the mean log-rate difference d gives 10**d - 1 (-0.5: half the bits).
"""
from __future__ import annotations

import numpy as np

from latentforge.errors import InputError


def pareto(rates, qualities) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats (less rate and more quality), sorted by rate."""
    order = np.argsort(rates, kind="stable")
    r, q = np.asarray(rates, float)[order], np.asarray(qualities, float)[order]
    keep = [i for i in range(len(r)) if q[i] > (q[:i].max() if i else -np.inf)]
    return r[keep], q[keep]


def bd_rate(anchor_rates, anchor_quality, test_rates, test_quality) -> float:
    """BD-rate of the test curve against the anchor, as a fraction (-0.5 = half the anchor's rate)."""
    curves = []
    for rates, quality in ((anchor_rates, anchor_quality), (test_rates, test_quality)):
        rates, quality = np.asarray(rates, float), np.asarray(quality, float)
        if len(rates) < 4 or len(rates) != len(quality) or (rates <= 0).any() or len(set(quality)) < 4:
            raise InputError(f"BD-rate needs >= 4 points of positive rate and distinct quality a curve, got "
                             f"{len(rates)} rates and {len(quality)} qualities")
        curves.append((quality, np.polyfit(quality, np.log10(rates), 3)))
    lo = max(q.min() for q, _ in curves)
    hi = min(q.max() for q, _ in curves)
    if hi <= lo:
        raise InputError(f"the curves' quality ranges do not overlap ({lo:.2f} > {hi:.2f}); no BD-rate")
    (_, fa), (_, ft) = curves
    integral = [np.polyval(np.polyint(f), hi) - np.polyval(np.polyint(f), lo) for f in (fa, ft)]
    return float(10 ** ((integral[1] - integral[0]) / (hi - lo)) - 1)
