"""The code prior's sampling loop, in NumPy, outside any graph.

The prior is only a function tokens [N, t] -> logits [N, t', K] whose last row is read (the
cached samplers return just that row: CachedLogits on torch, StepLogits here over an exported
step graph on onnxruntime or OpenVINO); the draws come from NumPy's PCG64, so a seed gives the
same code grid, and so the same image, on every backend (as `latentforge.latents` does for VAEs).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from latentforge.errors import InputError


def check_sampling(temperature: float, top_k: int | None, codebook_size: int) -> None:
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature >= 0):
        raise InputError(f"temperature must be a finite number >= 0 (0 picks the most likely code), "
                         f"got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or not 1 <= top_k <= codebook_size):
        raise InputError(f"top_k must be an integer in 1..{codebook_size} (the codebook size) or None, got {top_k!r}")


def next_code(logits: np.ndarray, u: np.ndarray, temperature: float, top_k: int | None) -> np.ndarray:
    """One code per row of logits [N, K], by inverse CDF at the uniforms u [N]."""
    logits = logits.astype(np.float64)
    if temperature == 0:
        return logits.argmax(1)
    if top_k is not None and top_k < logits.shape[1]:
        kth = np.partition(logits, -top_k, axis=1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    p = np.exp((logits - logits.max(1, keepdims=True)) / temperature)
    cdf = np.cumsum(p, axis=1)
    picks = (cdf <= (u * cdf[:, -1])[:, None]).sum(1)   # the first code whose cdf passes u: never a p = 0 one
    return np.minimum(picks, logits.shape[1] - 1)   # u * total can round up to the last bin's edge


def sample_codes(logits_fn: Callable[[np.ndarray], np.ndarray], n: int, grid: int, codebook_size: int,
                 seed: int | None = None, temperature: float = 1.0, top_k: int | None = None) -> np.ndarray:
    """n code grids int64 [n, grid, grid], drawn in raster order from `logits_fn`."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
        raise InputError(f"n must be a positive integer, got {n!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise InputError(f"seed must be an integer >= 0 or None, got {seed!r}")
    check_sampling(temperature, top_k, codebook_size)
    rng = np.random.Generator(np.random.PCG64(seed))
    tokens = np.full((n, 1), codebook_size, dtype=np.int64)   # the start token
    for _ in range(grid * grid):
        logits = logits_fn(tokens)[:, -1]
        code = next_code(logits, rng.random(n), temperature, top_k)
        tokens = np.concatenate([tokens, code[:, None].astype(np.int64)], axis=1)
    return tokens[:, 1:].reshape(n, grid, grid)


def sample_chunks(make_logits: Callable[[], Callable], n: int, grid: int, codebook_size: int, seed: int | None = None,
                  temperature: float = 1.0, top_k: int | None = None, chunk: int = 256) -> np.ndarray:
    """`sample_codes` for any n, `chunk` images at a time, each chunk with a fresh `make_logits()` (its own cache)
    and its own seed (seed + offset of its first image), so a large n never holds every cache at once."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
        raise InputError(f"n must be a positive integer, got {n!r}")
    return np.concatenate([
        sample_codes(make_logits(), min(chunk, n - i), grid, codebook_size,
                     None if seed is None else seed + i, temperature, top_k) for i in range(0, n, chunk)])


class StepLogits:
    """`tokens [N, t] -> logits [N, 1, K]` of the last position, through a prior's step graph
    `run(token [N], position [1], cache) -> (logits [N, K], kv [N, layers, 2, heads, d])`
    (latentforge.models.prior.PriorStep): each step's keys and values are written into the cache here, so a call
    that extends the last one by a token costs one step. Any other call starts from an empty cache and steps
    through its whole prefix. `cache_shape` is the cache's shape less the batch: [layers, 2, heads, T, d].
    """

    def __init__(self, run: Callable, cache_shape: tuple[int, ...], dtype=np.float32) -> None:
        self.run, self.cache_shape, self.dtype = run, tuple(cache_shape), dtype
        self.tokens: np.ndarray | None = None
        self.cache: np.ndarray | None = None

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        n, t = tokens.shape
        seen = self.tokens
        if seen is not None and seen.shape == (n, t - 1) and np.array_equal(seen, tokens[:, :-1]):
            positions = [t - 1]
        else:
            self.cache = np.zeros((n, *self.cache_shape), dtype=self.dtype)
            positions = range(t)
        for p in positions:
            logits, kv = self.run(np.ascontiguousarray(tokens[:, p]), np.array([p], dtype=np.int64), self.cache)
            self.cache[:, :, :, :, p] = kv
        self.tokens = tokens.copy()
        return logits[:, None]
