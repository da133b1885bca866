"""The WGAN-GP critic for images: the DCGAN discriminator's convolutions with layer norm and no sigmoid.

The gradient penalty is taken per sample, so the critic may not mix samples of a batch:
the WGAN-GP paper replaces BatchNorm by layer normalization. GroupNorm with one group
normalizes each sample over (C, H, W), which is that layer norm with a per-channel affine,
built from ops every runtime has.
"""
from __future__ import annotations

import torch
from torch import nn


class ImageCritic(nn.Module):
    def __init__(self, image_size: int, channels: int, ndf: int, levels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for _ in range(levels - 1):
            layers += [nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1),
                       nn.GroupNorm(1, ndf * mult * 2), nn.LeakyReLU(0.2, True)]
            mult *= 2
        layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 0)]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> critic values [N] (unbounded)."""
        return self.main(x).flatten()
