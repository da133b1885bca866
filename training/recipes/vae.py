"""The VAE recipe: reparameterized ELBO steps, with an optional KL warm-up; held-out ELBO in the loop."""
from __future__ import annotations

from .. import losses
from .recipe import Recipe, build_model, finite, normal, one_optimizer, updates_done


def kl_weight(cfg, updates: int) -> float:
    """beta, ramped linearly from 0 over the first kl_warmup steps (Bowman et al. 2016's KL annealing)."""
    if not cfg.kl_warmup:
        return float(cfg.beta)
    return float(cfg.beta) * min(1.0, (updates + 1) / cfg.kl_warmup)


def vae_step(cfg, model, optimizers, x, noise) -> dict:
    (opt,) = optimizers
    eps = normal(noise, x.shape[0], model.config.latent_dim).to(x.device)
    recon, kl = losses.vae_terms(model, x, eps)
    weight = kl_weight(cfg, updates_done(opt))
    loss = (recon + weight * kl).mean()
    metrics = {"loss": finite("loss", loss), "recon": recon.mean().item(), "kl": kl.mean().item()}
    if cfg.kl_warmup:
        metrics["kl_weight"] = weight
    if model.config.learn_sigma:
        metrics["obs_sigma"] = model.observation_sigma().item()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return metrics


VAE = Recipe(lr=1e-3, betas=(0.9, 0.999), build=build_model, optimizers=one_optimizer, step=vae_step,
             evaluates=True, hint=" or --beta")
