"""Drawing from a model: decoded latents, and the sample picture a run saves at every sample interval."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from latentforge.latents import latents

SAMPLE_COUNT = 64


@torch.no_grad()
def generate(model, n: int, seed: int, chunk: int = 500) -> np.ndarray:
    """n samples from latents(n, latent_dim, seed) in eval mode; float32 points [n, d] or images [n, C, H, W]."""
    was_training = model.training
    model.eval()  # the DCGAN generator's BatchNorm uses its running statistics and leaves them alone
    z = torch.from_numpy(latents(n, model.config.latent_dim, seed=seed))
    device = next(model.parameters()).device
    out = torch.cat([model.decode(z[i:i + chunk].to(device)).cpu() for i in range(0, n, chunk)])
    model.train(was_training)
    return out.numpy()


@torch.no_grad()
def save_samples(model, path: Path, seed: int, draw: Callable | None = None, data=None) -> None:
    """A grid of `draw(model, seed, data)`'s images (a recipe's own picture of progress), or by default
    of SAMPLE_COUNT decoded latents, the same ones at every step."""
    from latentforge.images import save_grid, to_uint8

    images = generate(model, SAMPLE_COUNT, seed) if draw is None else draw(model, seed, data).cpu().numpy()
    save_grid(to_uint8(images, model.config.value_range), path, nrow=8)


@torch.no_grad()
def reconstructions(model, seed: int, data) -> torch.Tensor:
    """The first 32 held-out images, each followed by its reconstruction `model(x)[0]` (a `samples` picture for
    the kinds that encode and decode: vqvae, gan-encoder)."""
    from latentforge.images import from_uint8

    images, _ = data.get("test", np.arange(min(32, data.size("test"))))
    x = torch.from_numpy(from_uint8(images, model.config.value_range)).to(next(model.parameters()).device)
    model.eval()
    x_out = model(x)[0]
    model.train()
    return torch.stack([x, x_out], dim=1).flatten(0, 1)
