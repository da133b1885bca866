"""The reparameterization trick, z = mu + sigma * eps, at three levels: plain Python, NumPy and PyTorch.

All three take log-variance (sigma = exp(0.5 * logvar)) and an optional eps; given
the same eps they compute the same z. The PyTorch level is the reference every
fused op and exported graph is checked against.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np
import torch

from latentforge.errors import InputError


def reparam_python(mu: Sequence[float], logvar: Sequence[float], eps: Sequence[float] | None = None) -> list[float]:
    """Level 0, pure Python: one latent vector, eps from random.gauss when not given."""
    if len(mu) != len(logvar) or (eps is not None and len(eps) != len(mu)):
        raise InputError(f"mu, logvar and eps must have the same length, got {len(mu)}, {len(logvar)}, "
                         f"{None if eps is None else len(eps)}")
    if eps is None:
        eps = [random.gauss(0.0, 1.0) for _ in mu]
    return [m + math.exp(0.5 * lv) * e for m, lv, e in zip(mu, logvar, eps)]


def reparam_numpy(mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray | None = None,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Level 1, NumPy: a batch at once."""
    mu = np.asarray(mu)
    logvar = np.asarray(logvar)
    if eps is None:
        rng = rng or np.random.default_rng()
        eps = rng.standard_normal(mu.shape).astype(mu.dtype, copy=False)
    return mu + np.exp(0.5 * logvar) * eps


def reparam_torch(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """Level 2, PyTorch: gradients flow to mu and logvar; eps is noise and gets none."""
    std = torch.exp(0.5 * logvar)
    if eps is None:
        eps = torch.randn_like(std)
    return mu + eps.detach() * std
