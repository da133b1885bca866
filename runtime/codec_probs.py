"""Integer code probabilities that the encoder and the decoder compute alike, whatever backend ran the prior.

An entropy coder decodes garbage unless both sides build bit-identical tables. The prior's logits come
from a float64 twin of its step graph (models/codec_prior.py) on torch or onnxruntime; the two differ
by ~1e-12 nats (measured in tests/test_codec.py), never by exactly zero. So:

1. each logit is rounded to a grid of STEP nats; the rounded integers are all the decoder ever uses;
2. weights come from those integers through an integer table, and frequencies from the weights by
   integer arithmetic summing to exactly 2**PRECISION: no floating point after the rounding;
3. a logit within MARGIN nats of a rounding edge could round the other way on the decoder's backend. The
   encoder sees it and codes a flag for that position (under a fixed, model-free probability), and the
   position's code under the uniform distribution instead; the decoder reads the flag first. So a
   discrepancy below MARGIN can never change a table. Logits more than TAIL nats below the largest are
   clipped to the table's last entry and need no check.

Rounding to 1/8 nat costs about STEP**2 / 24 nats a code (0.0009 bits), and a flagged position ~25 bits;
with MARGIN = 1e-8 a position is flagged with probability ~1e-5.
"""
from __future__ import annotations

import math

import numpy as np

from latentforge.errors import NumericalError

STEP = 0.125                  # nats per grid unit (a power of two: l / STEP is exact)
TAIL = 16.0                   # nats below the largest logit that still get their own weight
MARGIN = 1e-8                 # nats of cross-backend logit difference that the flags absorb (measured: ~1e-12)
PRECISION = 24                # frequencies sum to 2**24, constriction's default model precision
FLAG_BITS = 16                # a flag is coded with probability 2**-16
_UNITS = int(TAIL / STEP)
# exp(-d STEP) in 2**20 units; no entry is within 1e-6 (thousands of ulps) of a rounding edge (tests/test_codec.py),
# so every libm rounds it alike.
WEIGHTS = np.array([round(2.0 ** 20 * math.exp(-d * STEP)) for d in range(_UNITS + 1)], dtype=np.int64)
FLAG_PROBABILITIES = np.array([1 - 2.0 ** -FLAG_BITS, 2.0 ** -FLAG_BITS])


def grid_logits(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float logits [N, K] -> (integer distances below the row's largest, clipped to the table [N, K] int64,
    unsafe [N] bool: a logit that matters lies within MARGIN of a rounding edge)."""
    logits = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(logits).all():
        raise NumericalError("the code prior gave NaN or Inf logits; its weights are damaged: load a fresh copy")
    scaled = logits / STEP
    units = np.floor(scaled + 0.5)
    edge = np.abs(scaled - np.floor(scaled) - 0.5) < MARGIN / STEP
    matters = logits >= logits.max(1, keepdims=True) - TAIL - 2 * STEP
    distance = np.minimum(units.max(1, keepdims=True) - units, _UNITS).astype(np.int64)
    return distance, (edge & matters).any(1)


def frequencies(distance: np.ndarray) -> np.ndarray:
    """Grid distances [N, K] -> int64 frequencies [N, K], each >= 1, each row summing to 2**PRECISION.

    Integer arithmetic only, so any machine gets the same table from the same distances.
    """
    n, k = distance.shape
    w = WEIGHTS[distance]
    spare = (1 << PRECISION) - k
    freq = 1 + w * spare // w.sum(1, keepdims=True)
    rest = (1 << PRECISION) - freq.sum(1)
    freq[np.arange(n), distance.argmin(1)] += rest   # the rounding remainder goes to the most likely code
    return freq


def uniform(n: int, k: int) -> np.ndarray:
    """The flagged positions' table: every code alike, summing to 2**PRECISION."""
    freq = np.full((n, k), (1 << PRECISION) // k, dtype=np.int64)
    freq[:, 0] += (1 << PRECISION) - freq.sum(1)
    return freq


def as_probabilities(freq: np.ndarray) -> np.ndarray:
    """Frequencies as constriction's float64 probabilities: exact (a power-of-two total), so its quantizer sees
    the same numbers everywhere."""
    return freq.astype(np.float64) / float(1 << PRECISION)
