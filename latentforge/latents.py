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
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise InputError(f"seed must be an integer >= 0 or None, got {seed!r}")
    rng = np.random.Generator(np.random.PCG64(seed))
    z = rng.standard_normal((int(n), int(dim)), dtype=np.float32)
    if temperature != 1.0:
        z *= np.float32(temperature)
    return z


def interpolate(z0: np.ndarray, z1: np.ndarray, steps: int, method: str = "slerp") -> np.ndarray:
    """Walk from latent z0 to z1 in `steps` points ([steps, D], float32), endpoints included.

    slerp follows the great circle, so every point keeps the norm a N(0, I) sample
    typically has; lerp cuts through the low-density middle of the prior.
    """
    z0 = np.asarray(z0, dtype=np.float64).ravel()
    z1 = np.asarray(z1, dtype=np.float64).ravel()
    if z0.shape != z1.shape:
        raise InputError(f"endpoints must have the same width, got {z0.size} and {z1.size}")
    if not isinstance(steps, (int, np.integer)) or steps < 2:
        raise InputError(f"steps must be an integer >= 2, got {steps!r}")
    if method not in ("slerp", "lerp"):
        raise InputError(f"method must be 'slerp' or 'lerp', got {method!r}")
    t = np.linspace(0.0, 1.0, int(steps))[:, None]
    if method == "lerp":
        return ((1 - t) * z0 + t * z1).astype(np.float32)
    cos = np.dot(z0, z1) / max(np.linalg.norm(z0) * np.linalg.norm(z1), 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:  # parallel endpoints: slerp degenerates to lerp
        return ((1 - t) * z0 + t * z1).astype(np.float32)
    path = (np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)
    return path.astype(np.float32)
