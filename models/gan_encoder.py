"""An encoder into a trained GAN's latent space, bundled with the frozen generator it inverts: kind "gan-encoder".

encode(x) = (z, 0): a deterministic code, with a zero logvar so that the VAE's filter contract
(z = mu + temperature * exp(logvar / 2) * eps + offset) holds unchanged, and temperature adds noise in
units of the GAN's own N(0, I) prior. decode(z) is the generator's. The checkpoint holds both
(`encoder.*`, `to_latent.*`, `generator.*`), so one file loads as one model that encodes and decodes;
the generator's config and the sha256 of its weights are in this model's config, and loading refuses
a file whose generator weights are not the ones the encoder was trained against.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from latentforge.errors import CheckpointError, InputError

from .shapes import check_image_config, levels
from .vae import conv_encoder


@dataclass
class GANEncoderConfig:
    generator_kind: str = "dcgan"      # the kind of the GAN checkpoint whose generator this encoder inverts
    generator: dict = field(default_factory=dict)   # that checkpoint's config
    generator_sha256: str = ""         # weights_digest of its generator; "" for a model built in code
    image_size: int = 64               # image_size, channels and latent_dim are the generator's
    channels: int = 3
    latent_dim: int = 100
    # encoder widths: base_channels * 2**i per halving, at most max_channels; the defaults are the shipped faces
    # VAE's encoder (about 7 M multiply-adds at 64 px), a fraction of a 64 px DCGAN generator's cost (27 M at ngf 32)
    base_channels: int = 16
    max_channels: int = 128

    def __post_init__(self) -> None:
        from . import make_config  # models/__init__ imports this module

        check_image_config(self.image_size, self.channels, self.latent_dim)
        if not 1 <= self.base_channels <= self.max_channels <= 1024:
            raise InputError(f"base_channels and max_channels must satisfy 1 <= base <= max <= 1024, got "
                             f"{self.base_channels!r} and {self.max_channels!r}")
        gen = make_config(self.generator_kind, self.generator)
        if getattr(gen, "point_dim", 0) or not hasattr(gen, "image_size"):
            raise InputError(f"a gan-encoder inverts an image generator; a {self.generator_kind} model with config "
                             f"{self.generator} draws no images")
        theirs = (gen.image_size, gen.channels, gen.latent_dim)
        if theirs != (self.image_size, self.channels, self.latent_dim):
            raise InputError(f"the encoder is for {self.image_size} px x {self.channels} channels -> {self.latent_dim}-d "
                             f"latents but its generator makes {theirs[0]} px x {theirs[1]} channels from "
                             f"{theirs[2]}-d latents; build the encoder from the generator's config")

    @property
    def value_range(self) -> tuple[float, float]:
        from . import make_config

        return make_config(self.generator_kind, self.generator).value_range

    def widths(self) -> list[int]:
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(levels(self.image_size))]

    def to_dict(self) -> dict:
        return asdict(self)


def weights_digest(module: nn.Module) -> str:
    """sha256 of a module's tensors (names, dtypes, shapes and bytes, in name order): which generator this is."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class GANEncoder(nn.Module):
    kind = "gan-encoder"

    def __init__(self, config: GANEncoderConfig | None = None) -> None:
        from . import build_model

        super().__init__()
        self.config = cfg = config or GANEncoderConfig()   # the default DCGAN's: 64 px RGB from 100-d latents
        widths = cfg.widths()
        self.encoder = conv_encoder(cfg.channels, widths)
        self.to_latent = nn.Linear(widths[-1] * 16, cfg.latent_dim)
        self.generator = build_model(cfg.generator_kind, cfg.generator).generator
        self.generator.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        """The generator stays in eval mode: its BatchNorm uses, and never updates, its running statistics."""
        super().train(mode)
        self.generator.eval()
        return self

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [N, C, H, W] in the value range -> (z, zeros), each [N, latent_dim]."""
        z = self.to_latent(self.encoder(x))
        return z, torch.zeros_like(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G(E(x)), E(x))."""
        z = self.encode(x)[0]
        return self.decode(z), z

    def check_weights(self, path) -> None:
        """After loading: the generator must be the one the encoder was trained against."""
        expected = self.config.generator_sha256
        if expected and weights_digest(self.generator) != expected:
            raise CheckpointError(f"{str(path)!r}: its encoder was trained against generator {expected[:12]}, but the "
                                  f"generator weights in the file are {weights_digest(self.generator)[:12]}; an "
                                  "encoder only fits its own generator: train one with `latentforge train gan-encoder "
                                  "GAN_CHECKPOINT`")
