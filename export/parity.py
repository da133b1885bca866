"""The exporter's tolerance policy and its report table; the comparison itself is latentforge/parity.py."""
from __future__ import annotations

from latentforge.parity import OutputParity, compare

__all__ = ["ATOL_OF_PEAK", "MIN_PSNR", "OutputParity", "compare", "table"]

# The PSNR gate (dB against the fp32 reference) of each precision.
MIN_PSNR = {"fp32": None, "fp16": 40.0, "bf16": 35.0, "int8": 30.0}
# Elementwise bound on |variant - reference| as a fraction of the output's peak (value-range width, or
# 255 for bytes); the PSNR gate judges quality, this catches a few wildly wrong pixels.
ATOL_OF_PEAK = {"fp16": 0.05, "bf16": 0.1, "int8": 0.35}


def table(results: list[OutputParity]) -> str:
    """The comparison as a fixed-width table, one row per output."""
    head = ("output", "shape", "max abs", "max rel", "worst index", "PSNR dB", "atol", "rtol", "min PSNR", "result")
    rows = [head] + [(p.name, "x".join(map(str, p.shape)), f"{p.max_abs:.3g}", f"{p.max_rel:.3g}",
                      ",".join(map(str, p.worst_index)), f"{p.psnr_db:.1f}", f"{p.atol:g}", f"{p.rtol:g}",
                      "-" if p.min_psnr is None else f"{p.min_psnr:g}",
                      ("PASS" if p.passed else "FAIL") + (f" ({p.nonfinite} non-finite)" if p.nonfinite else ""))
                     for p in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
