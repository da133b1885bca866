"""Small MLPs for 2-D point data: a generator z -> R^d and a discriminator/critic R^d -> one logit.

ReLU hidden layers and a linear output on both sides, as in the PacGAN and VEEGAN
toy experiments. No normalization layers: BatchNorm would couple the samples of a batch,
which the WGAN-GP paper forbids in a critic and which hides collapse from a plain D.
"""
from __future__ import annotations

import torch
from torch import nn


def mlp(inputs: int, hidden: int, depth: int, outputs: int) -> nn.Sequential:
    """`depth` hidden layers of `hidden` ReLU units, then a linear layer to `outputs`."""
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


class PointGenerator(nn.Module):
    def __init__(self, latent_dim: int, point_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.main = mlp(latent_dim, hidden, depth, point_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, latent_dim] -> points float32 [N, point_dim]."""
        return self.main(z)


class PointDiscriminator(nn.Module):
    def __init__(self, point_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.main = mlp(point_dim, hidden, depth, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Points [N, point_dim] -> logits (or critic values) [N]."""
        return self.main(x).flatten()
