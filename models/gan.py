"""The GAN kinds ("gan", "wgan-gp", "unrolled-gan"): one generator/discriminator pair each.

They differ in training (training/recipes/gans.py), not in the generator. On 2-D point data
(`point_dim` > 0) both networks are small MLPs (models/points.py); on images the
generator is the DCGAN generator and the discriminator the DCGAN discriminator, except
for wgan-gp, whose critic has layer norm instead of BatchNorm, and with `spectral_norm`, where
it has spectral norm and no normalization layers (models/critic.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from latentforge.errors import InputError

from .critic import ImageCritic
from .dcgan import DCGANConfig, DCGANDiscriminator, DCGANGenerator, init_weights
from .points import PointDiscriminator, PointGenerator

POINT_LATENT_DIM = 8     # a few noise dimensions are enough to cover 25 modes; more only slows the MLP
IMAGE_LATENT_DIM = 100   # DCGAN's nz


@dataclass
class GANConfig:
    point_dim: int = 0       # > 0: point data of this dimension (MLPs); 0: images (DCGAN generator)
    image_size: int = 32
    channels: int = 3
    latent_dim: int = 0      # 0: POINT_LATENT_DIM for points, IMAGE_LATENT_DIM for images
    hidden: int = 128        # MLP width (points)
    depth: int = 3           # MLP hidden layers (points)
    ngf: int = 64            # DCGAN widths (images)
    ndf: int = 64
    spectral_norm: bool = False  # images: a discriminator with spectral norm and no BatchNorm (models/critic.py)
    minibatch_std: bool = False  # images, with spectral_norm or wgan-gp: the critic sees ProGAN's minibatch std

    def __post_init__(self) -> None:
        if not isinstance(self.point_dim, int) or not 0 <= self.point_dim <= 64:
            raise InputError(f"point_dim must be an integer in 0..64 (0 = images), got {self.point_dim!r}")
        if self.latent_dim == 0:
            self.latent_dim = POINT_LATENT_DIM if self.point_dim else IMAGE_LATENT_DIM
        for name in ("spectral_norm", "minibatch_std"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.point_dim:
            if not isinstance(self.latent_dim, int) or not 1 <= self.latent_dim <= 4096:
                raise InputError(f"latent_dim must be an integer in 1..4096, got {self.latent_dim!r}")
            for name, top in (("hidden", 4096), ("depth", 16)):
                value = getattr(self, name)
                if not isinstance(value, int) or not 1 <= value <= top:
                    raise InputError(f"{name} must be an integer in 1..{top}, got {value!r}")
        else:
            self.dcgan_config()  # checks image_size, channels, latent_dim, ngf and ndf

    def dcgan_config(self) -> DCGANConfig:
        return DCGANConfig(image_size=self.image_size, channels=self.channels, latent_dim=self.latent_dim,
                           ngf=self.ngf, ndf=self.ndf)

    @property
    def value_range(self) -> tuple[float, float]:
        # Points are unbounded coordinates; images are tanh outputs.
        return (float("-inf"), float("inf")) if self.point_dim else (-1.0, 1.0)

    def to_dict(self) -> dict:
        return asdict(self)


class GANPair(nn.Module):
    """Generator and discriminator in one module, so one checkpoint holds both."""

    kind = ""
    layer_norm_critic = False   # images: a critic without BatchNorm (wgan-gp)

    def __init__(self, config: GANConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or GANConfig()
        if c.point_dim:
            self.generator = PointGenerator(c.latent_dim, c.point_dim, c.hidden, c.depth)
            self.discriminator = PointDiscriminator(c.point_dim, c.hidden, c.depth)
            return
        dc = c.dcgan_config()
        self.generator = DCGANGenerator(dc)
        if c.spectral_norm or self.layer_norm_critic:
            self.discriminator = ImageCritic(c.image_size, c.channels, c.ndf, dc.levels, minibatch_std=c.minibatch_std,
                                             norm="spectral" if c.spectral_norm else "layer")
        elif c.minibatch_std:
            raise InputError(f"minibatch_std needs a discriminator without BatchNorm: set spectral_norm too (or use "
                             f"wgan-gp) for {self.kind}")
        else:
            self.discriminator = DCGANDiscriminator(dc)
        self.apply(init_weights)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, latent_dim] -> points [N, point_dim] or images [N, C, H, W] in [-1, 1]."""
        return self.generator(z)


class GAN(GANPair):
    kind = "gan"


class WGANGP(GANPair):
    kind = "wgan-gp"
    layer_norm_critic = True


class UnrolledGAN(GANPair):
    kind = "unrolled-gan"


GAN_MODELS = {cls.kind: (cls, GANConfig) for cls in (GAN, WGANGP, UnrolledGAN)}
