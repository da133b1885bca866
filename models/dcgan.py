"""The pytorch/examples DCGAN pair, generalized to 32, 64 and 128 px.

At 64 px, nz=100, ngf=64 the generator's state_dict is exactly pytorch/examples'
`netG` (keys `main.0.weight` ... `main.12.weight`), so a user's `netG.pth` loads.
The discriminator ends in logits (no Sigmoid) for a numerically stable loss;
Sigmoid has no parameters, so its keys still match `netD`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from latentforge.errors import InputError

from .shapes import check_image_config, levels



@dataclass
class DCGANConfig:
    image_size: int = 64
    channels: int = 3
    latent_dim: int = 100  # nz
    ngf: int = 64
    ndf: int = 64

    def __post_init__(self) -> None:
        check_image_config(self.image_size, self.channels, self.latent_dim)
        for name in ("ngf", "ndf"):
            if not 1 <= getattr(self, name) <= 1024:
                raise InputError(f"{name} must be in 1..1024, got {getattr(self, name)!r}")

    @property
    def value_range(self) -> tuple[float, float]:
        return (-1.0, 1.0)

    @property
    def levels(self) -> int:
        return levels(self.image_size)

    def to_dict(self) -> dict:
        return asdict(self)


class DCGANGenerator(nn.Module):
    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        self.config = cfg = config
        mult = 2 ** (cfg.levels - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.latent_dim, cfg.ngf * mult, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(cfg.ngf * mult), nn.ReLU(True)]
        while mult > 1:
            layers += [nn.ConvTranspose2d(cfg.ngf * mult, cfg.ngf * mult // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(cfg.ngf * mult // 2), nn.ReLU(True)]
            mult //= 2
        layers += [nn.ConvTranspose2d(cfg.ngf, cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, nz] (or pytorch/examples' [N, nz, 1, 1]) -> images [N, C, H, W] in [-1, 1]."""
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.main(z)


class DCGANDiscriminator(nn.Module):
    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        self.config = cfg = config
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, cfg.ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        mult = 1
        for _ in range(cfg.levels - 1):
            layers += [nn.Conv2d(cfg.ndf * mult, cfg.ndf * mult * 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(cfg.ndf * mult * 2), nn.LeakyReLU(0.2, True)]
            mult *= 2
        layers += [nn.Conv2d(cfg.ndf * mult, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> logits [N]; D(x) = sigmoid(logit)."""
        return self.main(x).flatten()


class DCGAN(nn.Module):
    """The pair, so one checkpoint holds both (`generator.*`, `discriminator.*`)."""

    kind = "dcgan"

    def __init__(self, config: DCGANConfig | None = None) -> None:
        super().__init__()
        self.config = config or DCGANConfig()
        self.generator = DCGANGenerator(self.config)
        self.discriminator = DCGANDiscriminator(self.config)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)


def init_weights(module: nn.Module) -> None:
    """pytorch/examples' DCGAN init: N(0, 0.02) convs, N(1, 0.02) BatchNorm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        # a spectrally normalized conv's weight is computed from its `original` (models/critic.py)
        weight = module.parametrizations.weight.original if parametrize.is_parametrized(module) else module.weight
        nn.init.normal_(weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
