"""What differs between model kinds in training: a Recipe per kind, registered in RECIPES.

The loop in train.py is shared; a recipe says how to build the model, which optimizers it has,
what one step does and (optionally) how to evaluate it on held-out data. A new kind adds a
Recipe in its own module and one line to RECIPES below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from . import losses


@dataclass(frozen=True)
class Recipe:
    lr: float | Callable            # default learning rate, or (cfg) -> it
    betas: tuple[float, float]      # Adam betas
    build: Callable                 # (cfg, config) -> nn.Module, called under a seeded torch RNG
    optimizers: Callable            # (cfg, model, adam) -> [Optimizer]; adam(params) uses lr and betas
    step: Callable                  # (cfg, model, optimizers, x, noise: torch.Generator) -> {metric: float}
    evaluates: bool = False         # True: the loop computes held-out metrics with train.py's evaluator
    hint: str = ""                  # added to "lower --lr" when a loss becomes non-finite, e.g. " or --beta"
    configure: Callable | None = None  # (cfg, image_size, channels) -> model config; None: TrainConfig's own
    samples: Callable | None = None    # (model, seed, data) -> float images for samples_NNNNNN.png; None: decode z
    real_batches: Callable = lambda cfg: 1   # (cfg) -> real batches of batch_size the loop draws per step
    run_fields: tuple[str, ...] = ()         # TrainConfig fields that a resumed run must share
    monitor: Callable | None = None          # (cfg, model, data, step, run_dir, records) -> (metrics, warning);
                                             # replaces the sample grid; see training/gan_monitor.py
    stuck: str | None = None                 # a loss that must not settle at 0 (D winning outright)


class NonFinite(ArithmeticError):
    """A loss that is NaN or Inf; the loop adds the step and what to do."""


def finite(name: str, loss: torch.Tensor) -> float:
    """The loss as a float, checked before any optimizer step can spread it into the weights."""
    value = loss.item()
    if not math.isfinite(value):
        raise NonFinite(f"{name} became {value}")
    return value


def _build_plain(cfg, config):
    from latentforge.models import MODELS

    return MODELS[cfg.kind][0](config)


def _build_dcgan(cfg, config):
    from latentforge.models import MODELS
    from latentforge.models.dcgan import init_weights

    model = MODELS[cfg.kind][0](config)
    model.apply(init_weights)
    return model


def kl_weight(cfg, updates_done: int) -> float:
    """beta, ramped linearly from 0 over the first kl_warmup steps (Bowman et al. 2016's KL annealing)."""
    if not cfg.kl_warmup:
        return float(cfg.beta)
    return float(cfg.beta) * min(1.0, (updates_done + 1) / cfg.kl_warmup)


def _updates_done(opt: torch.optim.Optimizer) -> int:
    """Adam's own update count, which the resume state carries: training step t has done t - 1 updates."""
    for state in opt.state.values():
        return int(state["step"])
    return 0


def vae_step(cfg, model, optimizers, x, noise) -> dict:
    (opt,) = optimizers
    eps = torch.randn(x.shape[0], model.config.latent_dim, generator=noise).to(x.device)
    recon, kl = losses.vae_terms(model, x, eps)
    weight = kl_weight(cfg, _updates_done(opt))
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


def dcgan_step(cfg, model, optimizers, real, noise) -> dict:
    """pytorch/examples' order: D on real and on detached fake, then G through the updated D."""
    opt_d, opt_g = optimizers
    z = torch.randn(real.shape[0], model.config.latent_dim, generator=noise).to(real.device)
    fake = model.generator(z)
    real_logits = model.discriminator(real)
    fake_logits = model.discriminator(fake.detach())
    loss_d = losses.discriminator_loss(real_logits, fake_logits)
    metrics = {"loss_d": finite("loss_d", loss_d)}
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    loss_g = losses.generator_loss(model.discriminator(fake))
    metrics["loss_g"] = finite("loss_g", loss_g)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    metrics["d_x"] = torch.sigmoid(real_logits).mean().item()
    metrics["d_g_z"] = torch.sigmoid(fake_logits).mean().item()  # D(G(z)) before the G step
    return metrics


RECIPES: dict[str, Recipe] = {
    "vae": Recipe(lr=1e-3, betas=(0.9, 0.999), build=_build_plain,
                  optimizers=lambda cfg, model, adam: [adam(model.parameters())],
                  step=vae_step, evaluates=True, hint=" or --beta"),
    "dcgan": Recipe(lr=2e-4, betas=(0.5, 0.999), build=_build_dcgan,  # betas as pytorch/examples
                    optimizers=lambda cfg, model, adam: [adam(model.discriminator.parameters()),
                                                         adam(model.generator.parameters())],
                    step=dcgan_step),
}

from .vq_recipes import PRIOR, VQVAE  # noqa: E402  (they use Recipe, defined above)

RECIPES.update({"vqvae": VQVAE, "prior": PRIOR})

# The GAN kinds ("gan", "wgan-gp", "unrolled-gan") live in their own module, which builds on dcgan_step above
# and adds itself to RECIPES: imported last, so that either module may be imported first.
from . import gan_recipes  # noqa: E402, F401
