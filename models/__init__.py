"""Models and their config dataclasses; `build_model(kind, config)` makes one from a checkpoint's metadata."""
from __future__ import annotations

from torch import nn

from latentforge.errors import CheckpointError

from .dcgan import DCGAN, DCGANConfig, DCGANDiscriminator, DCGANGenerator
from .prior import PriorConfig, VQPrior
from .gan import GAN_MODELS, GANConfig, GANPair
from .gan_encoder import GANEncoder, GANEncoderConfig
from .reparam import reparam_numpy, reparam_python, reparam_torch
from .vae import ConvVAE, VAEConfig
from .vqvae import VQVAE, VQVAEConfig

MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "vae": (ConvVAE, VAEConfig),
    "dcgan": (DCGAN, DCGANConfig),
    "vqvae": (VQVAE, VQVAEConfig),
    "prior": (VQPrior, PriorConfig),
    **GAN_MODELS,  # "gan", "wgan-gp", "unrolled-gan"
    "gan-encoder": (GANEncoder, GANEncoderConfig),   # an encoder bundled with the frozen generator it inverts
}


def make_config(kind: str, config: dict):
    if kind not in MODELS:
        raise CheckpointError(f"unknown model kind {kind!r}; latentforge knows {sorted(MODELS)}")
    config_cls = MODELS[kind][1]
    known = set(config_cls.__dataclass_fields__)
    unknown = set(config) - known
    if unknown:
        raise CheckpointError(f"config for {kind!r} has unknown fields {sorted(unknown)}; "
                              f"was it written by a newer latentforge?")
    return config_cls(**config)


def build_model(kind: str, config: dict) -> nn.Module:
    """A fresh, untrained model of `kind` (a key of MODELS) from a config dict."""
    config = make_config(kind, config)  # checks the kind first
    return MODELS[kind][0](config)


__all__ = [
    "MODELS", "ConvVAE", "VAEConfig", "VQVAE", "VQVAEConfig", "VQPrior", "PriorConfig",
    "DCGAN", "DCGANConfig", "DCGANGenerator", "DCGANDiscriminator", "GANConfig", "GANPair", "GANEncoder",
    "GANEncoderConfig",
    "build_model", "make_config", "reparam_numpy", "reparam_python", "reparam_torch",
]
