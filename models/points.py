"""Small MLPs for 2-D point data: a generator z -> R^d and a discriminator/critic R^d -> one logit.

ReLU hidden layers and a linear output on both sides, as in the PacGAN and VEEGAN
toy experiments. No normalization layers: BatchNorm would couple the samples of a batch,
which the WGAN-GP paper forbids in a critic and which hides collapse from a plain D.
Both work in units of a fixed `scale` (the data's spread, e.g. 2.83 on the grid), as the WGAN-GP
toy code divides its data by it: the MLPs then see coordinates of order 1 on every data set.
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
    def __init__(self, latent_dim: int, point_dim: int, hidden: int, depth: int, scale: float = 1.0) -> None:
        super().__init__()
        self.main = mlp(latent_dim, hidden, depth, point_dim)
        self.scale = scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, latent_dim] -> points float32 [N, point_dim]: the MLP works in units of `scale`."""
        return self.main(z) * self.scale


class PointDiscriminator(nn.Module):
    def __init__(self, point_dim: int, hidden: int, depth: int, scale: float = 1.0) -> None:
        super().__init__()
        self.main = mlp(point_dim, hidden, depth, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Points [N, point_dim] -> logits (or critic values) [N]; it sees x / `scale`."""
        return self.main(x / self.scale).flatten()
