"""Backend-independent latents: NumPy PCG64, so a seed is the same face on every backend."""
from __future__ import annotations

import numpy as np

from .errors import InputError


def latents(n: int, dim: int, seed: int | None = None, temperature: float = 1.0) -> np.ndarray:
    """Draw float32 N(0, temperature^2 I) latents of shape [n, dim] from NumPy's PCG64.

    The same `seed` gives the same array on every machine and backend; `seed=None`
    draws fresh entropy.
    """
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise InputError(f"n must be a positive integer, got {n!r}")
    if not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise InputError(f"latent dim must be a positive integer, got {dim!r}")
    if not np.isfinite(temperature) or temperature < 0:
        raise InputError(f"temperature must be a finite number >= 0, got {temperature!r}")
    rng = np.random.Generator(np.random.PCG64(seed))
    z = rng.standard_normal((int(n), int(dim)), dtype=np.float32)
    if temperature != 1.0:
        z *= np.float32(temperature)
    return z
