"""A convolutional VAE: strided-conv encoder -> (mu, logvar); Linear z -> C x 4 x 4, then upsampling blocks.

Built only from ops every runtime has (Conv, ConvTranspose, Relu, Gemm, Tanh/Sigmoid),
so the decoder exports cleanly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from latentforge.errors import InputError

from .reparam import reparam_torch
from .shapes import VAE_IMAGE_SIZES, check_image_config, levels

OUTPUTS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}
LIKELIHOODS = ("gaussian", "bernoulli")


@dataclass
class VAEConfig:
    image_size: int = 64
    channels: int = 3
    latent_dim: int = 32
    base_channels: int = 32
    max_channels: int = 256
    output: str = "sigmoid"        # "sigmoid" -> images in [0, 1]; "tanh" -> [-1, 1]
    likelihood: str = "gaussian"   # p(x|z): Gaussian with fixed obs_sigma, or Bernoulli (sigmoid output only)
    obs_sigma: float = 0.1         # Gaussian std of p(x|z), in the model's pixel units (the output value range)
    learn_sigma: bool = False      # True: obs_sigma is only the start; one shared std is learned with the weights

    def __post_init__(self) -> None:
        check_image_config(self.image_size, self.channels, self.latent_dim, VAE_IMAGE_SIZES)
        if not 1 <= self.base_channels <= self.max_channels:
            raise InputError(f"base_channels must be in 1..max_channels ({self.max_channels}), got {self.base_channels!r}")
        if self.output not in OUTPUTS:
            raise InputError(f"output must be one of {sorted(OUTPUTS)}, got {self.output!r}")
        if self.likelihood not in LIKELIHOODS:
            raise InputError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.likelihood == "bernoulli" and self.output != "sigmoid":
            raise InputError("likelihood 'bernoulli' needs output 'sigmoid' (values in [0, 1])")
        if self.learn_sigma and self.likelihood != "gaussian":
            raise InputError("learn_sigma needs likelihood 'gaussian' (a Bernoulli has no variance to learn)")
        if not self.obs_sigma > 0:
            raise InputError(f"obs_sigma must be > 0, got {self.obs_sigma!r}")

    @property
    def value_range(self) -> tuple[float, float]:
        return OUTPUTS[self.output]

    def widths(self) -> list[int]:
        """Channel width at each resolution from image_size/2 down to 4."""
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(levels(self.image_size))]

    def to_dict(self) -> dict:
        return asdict(self)


def conv_encoder(channels: int, widths: list[int]) -> nn.Sequential:
    """Strided 4x4 convolutions with ReLU, each halving the image, then Flatten: an image of 4 * 2**len(widths)
    px becomes [N, widths[-1] * 16]."""
    layers: list[nn.Module] = []
    c_in = channels
    for w in widths:
        layers += [nn.Conv2d(c_in, w, 4, 2, 1), nn.ReLU(inplace=True)]
        c_in = w
    return nn.Sequential(*layers, nn.Flatten())


class ConvVAE(nn.Module):
    kind = "vae"

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or VAEConfig()
        widths = cfg.widths()
        self.encoder = conv_encoder(cfg.channels, widths)
        self.to_stats = nn.Linear(widths[-1] * 16, 2 * cfg.latent_dim)

        self.from_latent = nn.Linear(cfg.latent_dim, widths[-1] * 16)
        self.top_channels = widths[-1]
        up: list[nn.Module] = [nn.ReLU(inplace=True)]
        for w_in, w_out in zip(widths[::-1], widths[::-1][1:]):
            up += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1), nn.ReLU(inplace=True)]
        up += [nn.ConvTranspose2d(widths[0], cfg.channels, 4, 2, 1),
               nn.Sigmoid() if cfg.output == "sigmoid" else nn.Tanh()]
        self.decoder = nn.Sequential(*up)
        if cfg.learn_sigma:
            self.log_sigma = nn.Parameter(torch.tensor(math.log(cfg.obs_sigma)))

    def observation_sigma(self) -> torch.Tensor | float:
        """The std of the Gaussian p(x|z): the learned one, or the fixed config value."""
        return self.log_sigma.exp() if self.config.learn_sigma else self.config.obs_sigma

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [N, C, H, W] in the value range -> (mu, logvar), each [N, latent_dim]."""
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [N, latent_dim] -> images [N, C, H, W] in the value range."""
        h = self.from_latent(z).view(z.shape[0], self.top_channels, 4, 4)
        return self.decoder(h)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        mu, logvar = self.encode(x)
        z = reparam_torch(mu, logvar, eps)
        return self.decode(z), mu, logvar
