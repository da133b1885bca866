"""Shared fixtures: tiny random models saved as checkpoints and exported to ONNX once per session."""
import json

import pytest
import torch

from latentforge.checkpoint import save_checkpoint
from latentforge.export import export_onnx
from latentforge.models import DCGAN, ConvVAE, DCGANConfig, VAEConfig

TINY_VAE = VAEConfig(base_channels=8, latent_dim=8, image_size=32)
TINY_DCGAN = DCGANConfig(image_size=32, channels=1, latent_dim=10, ngf=8, ndf=8)


@pytest.fixture(scope="session")
def vae_checkpoint(tmp_path_factory):
    """A tiny random VAE (32 px RGB, 8-d latents) with one attribute direction."""
    torch.manual_seed(0)
    model = ConvVAE(TINY_VAE).eval()
    smile = [0.5] * TINY_VAE.latent_dim
    path = tmp_path_factory.mktemp("vae") / "vae.safetensors"
    return save_checkpoint(path, model, data="random", step=0, extra={"attributes": json.dumps({"smile": smile})})


@pytest.fixture(scope="session")
def dcgan_checkpoint(tmp_path_factory):
    """A tiny random DCGAN (32 px grey, 10-d latents) whose BatchNorm has non-trivial running statistics."""
    torch.manual_seed(0)
    model = DCGAN(TINY_DCGAN)
    model.generator.train()(torch.randn(8, TINY_DCGAN.latent_dim))
    path = tmp_path_factory.mktemp("dcgan") / "dcgan.safetensors"
    return save_checkpoint(path, model.eval(), data="random", step=0)


@pytest.fixture(scope="session")
def vae_onnx(vae_checkpoint):
    return export_onnx(vae_checkpoint, vae_checkpoint.with_suffix(".onnx")).path


@pytest.fixture(scope="session")
def dcgan_onnx(dcgan_checkpoint):
    return export_onnx(dcgan_checkpoint, dcgan_checkpoint.with_suffix(".onnx")).path
