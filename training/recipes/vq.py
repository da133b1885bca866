"""Recipes for the VQ-VAE and for its code prior.

VQ-VAE: reconstruction MSE + 0.25 * commitment (the codebook itself follows an EMA, so it has
no loss term); perplexity and dead codes of each batch are logged. Prior: the frozen VQ-VAE
(carried inside the prior model) encodes each training batch to codes, and the transformer
learns them by next-code cross-entropy; so its data are the VQ-VAE's codes of the training set.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from latentforge.errors import InputError

from ..samples import SAMPLE_COUNT, reconstructions
from .recipe import Recipe, build_model, decay_lr, finite, one_optimizer


def vqvae_step(cfg, model, optimizers, x, noise) -> dict:
    from latentforge.models.vqvae import usage

    (opt,) = optimizers
    x_out, idx, commitment = model(x, noise)
    recon = F.mse_loss(x_out, x)
    commit = commitment.mean() / (idx[0].numel() * model.config.code_dim)   # per latent element, as the paper
    loss = recon + model.config.commitment * commit
    perplexity, unused = usage(idx, model.config.codebook_size)
    metrics = {"loss": finite("loss", loss), "recon_mse": recon.item(), "commitment": commit.item(),
               "perplexity": perplexity, "unused_codes": float(unused),
               "restarted_codes": float(model.quantizer.restarted)}
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return metrics


def prior_step(cfg, model, optimizers, x, noise) -> dict:
    decay_lr(cfg, optimizers)   # --lr-decay-start: linear to 0 over the end of the run, as for the GANs
    (opt,) = optimizers
    with torch.no_grad():
        codes = model.vqvae.encode(x)
    nll = model.nll(codes)
    loss = nll.mean() / codes[0].numel()
    metrics = {"loss": finite("loss", loss), "bits_per_code": loss.item() / math.log(2)}
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return metrics


def _configure_vqvae(cfg, image_size: int, channels: int):
    from latentforge.models.vqvae import VQVAEConfig

    return VQVAEConfig(**dict(cfg.model_options, image_size=image_size, channels=channels))


def _configure_prior(cfg, image_size: int, channels: int):
    from latentforge.checkpoint import read_info
    from latentforge.models.prior import PriorConfig

    if not cfg.source:
        raise InputError("a prior is trained on a VQ-VAE's codes: give its checkpoint, "
                         "`latentforge train prior VQVAE_CHECKPOINT --out RUN_DIR`")
    info = read_info(cfg.source)
    if info.kind != "vqvae":
        raise InputError(f"{cfg.source} is a {info.kind} checkpoint; a prior needs a vqvae checkpoint")
    vq = info.config
    if (vq["image_size"], vq["channels"]) != (image_size, channels):
        raise InputError(f"the VQ-VAE {cfg.source} is for {vq['image_size']} px x {vq['channels']} channels but the "
                         f"data are {image_size} px x {channels}; train the prior on the VQ-VAE's data "
                         f"({info.data})")
    return PriorConfig(**dict(cfg.model_options, vqvae=vq))


def _build_prior(cfg, config):
    from latentforge.checkpoint import load_checkpoint
    from latentforge.models.prior import VQPrior

    model = VQPrior(config)
    vqvae, _ = load_checkpoint(cfg.source)
    model.vqvae.load_state_dict(vqvae.state_dict())
    return model


@torch.no_grad()
def _prior_samples(model, seed: int, data) -> torch.Tensor:
    from latentforge.models.prior import CachedLogits
    from latentforge.runtime.vq_sampling import sample_codes

    model.eval()
    device = next(model.parameters()).device
    grid = model.config.vq.grid_size
    codes = sample_codes(CachedLogits.numpy(model.transformer), SAMPLE_COUNT, grid, model.config.vq.codebook_size,
                         seed=seed)
    images = model.decode(torch.from_numpy(codes).to(device))
    model.train()
    return images


VQVAE = Recipe(lr=5e-4, betas=(0.9, 0.999), build=build_model, optimizers=one_optimizer, step=vqvae_step,
               configure=_configure_vqvae, samples=reconstructions)
PRIOR = Recipe(lr=3e-4, betas=(0.9, 0.95), build=_build_prior,
               optimizers=lambda cfg, model, adam: [adam(model.transformer.parameters())],
               step=prior_step, configure=_configure_prior, samples=_prior_samples, run_fields=("lr_decay_start",))
