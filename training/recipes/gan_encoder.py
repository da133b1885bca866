"""The gan-encoder recipe: GAN inversion, an encoder trained against a trained GAN's FROZEN generator.

`latentforge train gan-encoder GAN_CHECKPOINT --out RUN_DIR`. Each step, for a batch of real images x
and fresh latents z ~ N(0, I):
    pixel    MSE(G(E(x)), x)                             the reconstruction, in the value range
    feature  mean over the GAN's discriminator's layers l of MSE(D_l(G(E(x))), D_l(x)) / mean(D_l(x)^2), each
             layer's error relative to its own scale (Larsen et al. 2016 measure VAE-GAN reconstructions in the
             discriminator's features)
    latent   MSE(E(G(z)), z)                             on the generator's own images the true code is known,
             which keeps E's codes where G was trained (Zhu et al. 2016, iGAN, train their encoder on it)
    loss = pixel + feature_weight * feature + latent_weight * latent.
Only the encoder learns; the generator (bundled in the checkpoint) and the discriminator (read from
GAN_CHECKPOINT, not saved) never change, and the generator's BatchNorm stays in eval mode. `--init-from`
starts the encoder from another gan-encoder's (e.g. one trained against an earlier generator of the same GAN).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from latentforge.errors import InputError

from ..samples import reconstructions, save_samples
from .recipe import Recipe, decay_lr, finite, normal

MODEL_OPTIONS = ("base_channels", "max_channels")
HELD_OUT = 256   # test images whose reconstruction PSNR is logged at each sample step


@lru_cache(maxsize=2)
def _gan(path: str):
    """The GAN checkpoint's pair (generator and discriminator), frozen, in eval mode."""
    from latentforge.checkpoint import load_checkpoint

    pair, info = load_checkpoint(path)
    if not (hasattr(pair, "generator") and hasattr(pair, "discriminator")):
        raise InputError(f"{path} is a {info.kind} checkpoint; a gan-encoder inverts a GAN's generator: give a "
                         "dcgan, gan, wgan-gp or unrolled-gan checkpoint")
    return pair.requires_grad_(False).eval(), info


def _critic(path: str, device: torch.device):
    pair, _ = _gan(path)
    return pair.discriminator.to(device)


def features(critic, x: torch.Tensor) -> list[torch.Tensor]:
    """The discriminator's activations after each of its nonlinearities, from the image to the last one."""
    out = []
    for layer in critic.main:
        x = layer(x)
        if isinstance(layer, (torch.nn.LeakyReLU, torch.nn.ReLU)):
            out.append(x)
    return out


def encoder_step(cfg, model, optimizers, x, noise) -> dict:
    decay_lr(cfg, optimizers)
    (opt,) = optimizers
    critic = _critic(cfg.source, x.device)
    x_hat, _ = model(x)
    pixel = F.mse_loss(x_hat, x)
    with torch.no_grad():
        real = features(critic, x)
        z = normal(noise, x.shape[0], model.config.latent_dim).to(x.device)
        drawn = model.decode(z)
    feature = sum(F.mse_loss(a, b) / b.square().mean().clamp_min(1e-12)
                  for a, b in zip(features(critic, x_hat), real)) / len(real)
    latent = F.mse_loss(model.encode(drawn)[0], z)
    loss = pixel + cfg.feature_weight * feature + cfg.latent_weight * latent
    metrics = {"loss": finite("loss", loss), "pixel_mse": pixel.item(), "feature": feature.item(),
               "latent_mse": latent.item()}
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return metrics


def _configure(cfg, image_size: int, channels: int):
    from latentforge.models.gan_encoder import GANEncoderConfig, weights_digest

    if not cfg.source:
        raise InputError("a gan-encoder inverts a trained GAN: give its checkpoint, "
                         "`latentforge train gan-encoder GAN_CHECKPOINT --out RUN_DIR`")
    for name in ("feature_weight", "latent_weight"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    pair, info = _gan(str(cfg.source))
    if info.config.get("point_dim"):
        raise InputError(f"{cfg.source} is a 2-D point GAN; a gan-encoder inverts an image generator")
    gen = pair.config
    if (gen.image_size, gen.channels) != (image_size, channels):
        raise InputError(f"the GAN {cfg.source} makes {gen.image_size} px x {gen.channels}-channel images but the data "
                         f"are {image_size} px x {channels}; train the encoder on the GAN's data ({info.data})")
    if cfg.latent_dim is not None and cfg.latent_dim != gen.latent_dim:
        raise InputError(f"--latent-dim {cfg.latent_dim} differs from the GAN's {gen.latent_dim}: an encoder's latents "
                         "are its generator's; drop --latent-dim")
    unknown = sorted(set(cfg.model_options) - set(MODEL_OPTIONS))
    if unknown:
        raise InputError(f"model_options has unknown field(s) {unknown} for gan-encoder; known: {list(MODEL_OPTIONS)}")
    return GANEncoderConfig(**cfg.model_options, generator_kind=info.kind, generator=info.config,
                            generator_sha256=weights_digest(pair.generator), image_size=image_size,
                            channels=channels, latent_dim=gen.latent_dim)


def _build(cfg, config):
    from latentforge.checkpoint import load_checkpoint
    from latentforge.models.gan_encoder import GANEncoder

    model = GANEncoder(config)
    pair, _ = _gan(str(cfg.source))
    model.generator.load_state_dict(pair.generator.state_dict())
    if cfg.init_from:   # a warm start: another gan-encoder's encoder (its generator may be another one)
        start, info = load_checkpoint(cfg.init_from)
        if info.kind != "gan-encoder" or start.config.widths() != config.widths() or \
                start.config.latent_dim != config.latent_dim:
            raise InputError(f"--init-from {cfg.init_from} must be a gan-encoder of the same encoder widths and "
                             f"latent width ({config.widths()} -> {config.latent_dim}); it is a {info.kind}")
        model.encoder.load_state_dict(start.encoder.state_dict())
        model.to_latent.load_state_dict(start.to_latent.state_dict())
    return model


def _encoder_optimizer(cfg, model, adam) -> list:
    return [adam([p for p in model.parameters() if p.requires_grad])]


@torch.no_grad()
def held_out_psnr(model, data, n: int = HELD_OUT) -> float:
    """Mean PSNR (dB) of G(E(x)) against x over the first n test images, in the model's value range."""
    from latentforge.images import from_uint8

    lo, hi = model.config.value_range
    images, _ = data.get("test", np.arange(min(n, data.size("test"))))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.from_numpy(from_uint8(images, (lo, hi))).to(device)
    mse = (model(x)[0] - x).square().flatten(1).mean(1)
    model.train(was_training)
    return float((10 * torch.log10((hi - lo) ** 2 / mse.clamp_min(1e-12))).mean())


def monitor(cfg, model, data, step, run_dir, records) -> tuple[dict, str | None]:
    """The reconstruction grid (test image, then G(E(image))) and the held-out PSNR."""
    save_samples(model, run_dir / f"samples_{step:06d}.png", cfg.seed, reconstructions, data)
    return {"test_psnr": held_out_psnr(model, data)}, None


GAN_ENCODER = Recipe(lr=1e-3, betas=(0.9, 0.999), build=_build, optimizers=_encoder_optimizer, step=encoder_step,
                     configure=_configure, monitor=monitor, hint=" or lower --feature-weight",
                     run_fields=("feature_weight", "latent_weight", "lr_decay_start", "init_from"))
