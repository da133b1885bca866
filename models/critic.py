"""Image critics without BatchNorm: the DCGAN discriminator's convolutions with layer norm, or with spectral norm.

The WGAN-GP gradient penalty is taken per sample, so its critic may not mix samples of a
batch: the WGAN-GP paper replaces BatchNorm by layer normalization. GroupNorm with one group
normalizes each sample over (C, H, W), which is that layer norm with a per-channel affine,
built from ops every runtime has.

Spectral normalization (Miyato et al. 2018) instead divides each convolution's weight by its
largest singular value (one power iteration per training step), so the discriminator is
1-Lipschitz per layer: it cannot drive D(x) to 1 and D(G(z)) to 0 within a few steps, and the
generator keeps a useful gradient. It has no normalization layers at all.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

NORMS = ("layer", "spectral")
STD_GROUP = 4   # samples per minibatch-std group, as in ProGAN


class MinibatchStd(nn.Module):
    """ProGAN's minibatch standard deviation (Karras et al. 2018): one more channel holding how much the samples of
    each group of STD_GROUP differ, so a generator that makes the same image every time is easy to tell apart."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = min(STD_GROUP, n)
        if n % group:
            group = 1 if n < 2 else next(g for g in range(group, 0, -1) if n % g == 0)
        y = x.reshape(group, n // group, c, h, w)
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))   # [n // group]
        return torch.cat([x, std.repeat(group)[:, None, None, None].expand(n, 1, h, w)], dim=1)


class ImageCritic(nn.Module):
    def __init__(self, image_size: int, channels: int, ndf: int, levels: int, norm: str = "layer",
                 minibatch_std: bool = False) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        wrap = spectral_norm if norm == "spectral" else (lambda conv: conv)
        layers: list[nn.Module] = [wrap(nn.Conv2d(channels, ndf, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        mult = 1
        for _ in range(levels - 1):
            layers.append(wrap(nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1)))
            if norm == "layer":
                layers.append(nn.GroupNorm(1, ndf * mult * 2))
            layers.append(nn.LeakyReLU(0.2, True))
            mult *= 2
        if minibatch_std:
            layers.append(MinibatchStd())
        layers += [wrap(nn.Conv2d(ndf * mult + int(minibatch_std), 1, 4, 1, 0))]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> critic values or logits [N] (unbounded)."""
        return self.main(x).flatten()
