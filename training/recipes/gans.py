"""Training steps of the GAN kinds: "dcgan" (pytorch/examples), "gan" (its non-saturating loss with
`critic_steps`), "wgan-gp" and "unrolled-gan".

One loop step is one generator update. wgan-gp does `critic_steps` critic updates before it,
each on its own slice of the step's real batch (the loop draws `batch_size * critic_steps`
real samples). unrolled-gan (Metz et al. 2017) updates G against a copy of D advanced `unroll`
differentiable Adam steps, so G's gradient sees how D would answer its move.
"""
from __future__ import annotations

import torch
from torch.func import functional_call

from .. import losses
from .gan_monitor import monitor
from .recipe import Recipe, build_model, decay_lr, finite, normal, pair_optimizers, uniform

DEFAULT_CRITIC_STEPS = {"gan": 1, "wgan-gp": 5, "unrolled-gan": 1}


def critic_steps(cfg) -> int:
    return cfg.critic_steps or DEFAULT_CRITIC_STEPS[cfg.kind]


def _z(model, n: int, noise: torch.Generator, device) -> torch.Tensor:
    return normal(noise, n, model.config.latent_dim).to(device)


def _losses(cfg):
    """(D loss, G loss) of `--gan-loss` (gan: non-saturating "ns" or "hinge"; the other kinds: "ns")."""
    return losses.GAN_LOSSES[getattr(cfg, "gan_loss", "ns")]


def real_logits_r1(cfg, disc, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """D's logits on the real batch and, with `--r1 GAMMA`, the R1 penalty GAMMA/2 * E||grad_x D(x)||^2 at the
    real samples (Mescheder et al. 2018, "Which training methods for GANs actually converge?"): D kept flat on
    the data cannot build the steep walls around a mode that a generator, once it has left, never climbs back."""
    gamma = getattr(cfg, "r1", 0.0)
    if not gamma:
        return disc(real), None
    real = real.detach().requires_grad_(True)
    logits = disc(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return logits, 0.5 * gamma * grad.flatten(1).square().sum(dim=1).mean()


def _with_r1(loss_d: torch.Tensor, penalty: torch.Tensor | None, metrics: dict) -> torch.Tensor:
    if penalty is None:
        return loss_d
    metrics["r1"] = finite("r1", penalty)
    return loss_d + penalty


def dcgan_step(cfg, model, optimizers, real, noise) -> dict:
    """pytorch/examples' order: D on real and on detached fake, then G through the updated D."""
    opt_d, opt_g = optimizers
    d_loss, g_loss = _losses(cfg)
    fake = model.generator(_z(model, real.shape[0], noise, real.device))
    real_logits, penalty = real_logits_r1(cfg, model.discriminator, real)
    fake_logits = model.discriminator(fake.detach())
    loss_d = d_loss(real_logits, fake_logits)
    metrics = {"loss_d": finite("loss_d", loss_d)}
    loss_d = _with_r1(loss_d, penalty, metrics)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    loss_g = g_loss(model.discriminator(fake))
    metrics["loss_g"] = finite("loss_g", loss_g)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    metrics["d_x"] = torch.sigmoid(real_logits).mean().item()
    metrics["d_g_z"] = torch.sigmoid(fake_logits).mean().item()  # D(G(z)) before the G step
    return metrics


def gan_step(cfg, model, optimizers, real, noise) -> dict:
    """`critic_steps` discriminator updates (default 1) with the non-saturating loss, then one G update."""
    decay_lr(cfg, optimizers)
    parts = real.chunk(critic_steps(cfg))
    for part in parts[:-1]:
        _d_only(cfg, model, optimizers[0], part, noise)
    return dcgan_step(cfg, model, optimizers, parts[-1], noise)


def _d_only(cfg, model, opt_d, real, noise) -> None:
    with torch.no_grad():   # D's step needs no graph through G
        fake = model.generator(_z(model, real.shape[0], noise, real.device))
    real_logits, penalty = real_logits_r1(cfg, model.discriminator, real)
    loss_d = _with_r1(_losses(cfg)[0](real_logits, model.discriminator(fake)), penalty, {})
    finite("loss_d", loss_d)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
    """WGAN-GP's penalty: (||grad_x critic(x)|| - 1)^2 at random points between real and fake samples."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    t = uniform(noise, *shape).to(real.device)
    between = (t * real + (1 - t) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(between).sum(), between, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def wgan_gp_step(cfg, model, optimizers, real, noise) -> dict:
    decay_lr(cfg, optimizers)
    opt_d, opt_g = optimizers
    critic, n = model.discriminator, critic_steps(cfg)
    w_sum = gp_sum = 0.0
    for part in real.chunk(n):
        with torch.no_grad():   # the critic's step needs no graph through G
            fake = model.generator(_z(model, part.shape[0], noise, part.device))
        gp = gradient_penalty(critic, part, fake, noise)
        wasserstein = critic(part).mean() - critic(fake).mean()
        loss_d = -wasserstein + cfg.gp_lambda * gp
        finite("loss_d", loss_d)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        w_sum += wasserstein.item()
        gp_sum += gp.item()
    loss_g = -critic(model.generator(_z(model, real.shape[0] // n, noise, real.device))).mean()
    metrics = {"loss_d": loss_d.item(), "loss_g": finite("loss_g", loss_g), "wasserstein": w_sum / n,
               "gp": gp_sum / n}
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return metrics


def unrolled_params(disc, opt_d, real, fake, k: int) -> dict:
    """D's parameters after k Adam steps on (real, fake), as functions of fake (create_graph)."""
    names = [name for name, _ in disc.named_parameters()]
    params = dict(disc.named_parameters())
    group = opt_d.param_groups[0]
    lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
    moments = []
    for p in params.values():  # start from D's own Adam moments, as the real next steps would
        state = opt_d.state.get(p, {})
        moments.append([state.get("exp_avg", torch.zeros_like(p)).detach(),
                        state.get("exp_avg_sq", torch.zeros_like(p)).detach(),
                        float(state.get("step", 0))])
    for _ in range(k):
        loss = losses.discriminator_loss(functional_call(disc, params, (real,)), functional_call(disc, params, (fake,)))
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        new = {}
        for name, g, m in zip(names, grads, moments):
            m[2] += 1
            m[0] = b1 * m[0] + (1 - b1) * g
            m[1] = b2 * m[1] + (1 - b2) * g * g
            m_hat, v_hat = m[0] / (1 - b1 ** m[2]), m[1] / (1 - b2 ** m[2])
            # torch.optim.Adam's update; the 1e-30 keeps sqrt's derivative finite at a zero moment (a dead unit),
            # where it would be inf * 0 = NaN, and is below float32 resolution of any moment that matters
            new[name] = params[name] - lr * m_hat / ((v_hat + 1e-30).sqrt() + eps)
        params = new
    return params


def unrolled_step(cfg, model, optimizers, real, noise) -> dict:
    """G against D unrolled `cfg.unroll` steps, then D's own update, both from the same starting point."""
    decay_lr(cfg, optimizers)
    opt_d, opt_g = optimizers
    disc, gen = model.discriminator, model.generator
    fake = gen(_z(model, real.shape[0], noise, real.device))
    (real_logits, penalty), fake_logits = real_logits_r1(cfg, disc, real), disc(fake.detach())
    loss_d = losses.discriminator_loss(real_logits, fake_logits)
    metrics = {"loss_d": finite("loss_d", loss_d)}
    loss_d = _with_r1(loss_d, penalty, metrics)   # G's look-ahead below steps D on the plain loss
    ahead = unrolled_params(disc, opt_d, real, fake, cfg.unroll) if cfg.unroll else dict(disc.named_parameters())
    loss_g = losses.generator_loss(functional_call(disc, ahead, (fake,)))
    metrics["loss_g"] = finite("loss_g", loss_g)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward(inputs=list(gen.parameters()))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward(inputs=list(disc.parameters()))
    opt_d.step()
    opt_g.step()
    metrics["d_x"] = torch.sigmoid(real_logits).mean().item()
    metrics["d_g_z"] = torch.sigmoid(fake_logits).mean().item()
    return metrics


def _build_dcgan(cfg, config):
    from latentforge.models.dcgan import init_weights

    model = build_model(cfg, config)
    model.apply(init_weights)
    return model


# The defaults on the 2-D point sets, per kind and data: what `latentforge train KIND --data ring|grid` uses for
# every setting it is not given (TrainConfig fields; model_options are GANConfig's). Chosen by single-seed
# measurements on a shared, loaded 2-core CPU at a budget that lets benchmarks/modes.py run all 10 seeds of
# every row there (benchmarks/results/modes.md, docs/gans.md): small MLPs, a few thousand steps, lr decaying to 0
# over the second half. wgan-gp's larger batches (2026-12-01, seed 0): ring 84 -> 93 -> 95 % HQ at batch 64 -> 512
# (2000 steps) -> 512 (3000 steps); grid 18 -> 56 % at batch 64 -> 512 (2000 steps), 82 % at 256 x 3000 steps.
# unrolled-gan on ring (2026-12-02, seed 0): 1500 x 64 (the earlier default) 58 % HQ over 10 seeds; 4000 x 256 at
# lr 5e-4 with the 0.999 average 87 % (reverse KL 0.26); 4000 x 512 at lr 1e-3 with the average 93 % (0.08). On grid
# 4000 x 256 with the average and a 128-wide MLP kept 12 of 25 modes: D's walls around the central modes kept G off
# the outer ring. D's R1 penalty (2026-12-02, seed 0, the same run): gamma 1 25 modes at 55 % HQ, 0.1 25 at 82 %
# (reverse KL 0.04), 0.03 75 %, 0.01 22 modes, 10 18 modes; 0.1 for 8000 steps 25 at 92 % (0.02); on the 1000 x 64
# default R1 left HQ at 1-3 %.
# The grid MLPs work in units of its coordinates' spread (2.83), as the WGAN-GP toy code scales its data.
_SMALL = {"batch_size": 64, "lr_decay_start": 0.5}
_GRID = {"hidden": 64, "depth": 3, "point_scale": 2.83}
POINT_DEFAULTS = {
    ("gan", "ring"): {"steps": 3000, **_SMALL, "lr": 2e-3, "model_options": {"hidden": 64, "depth": 3}},
    ("gan", "grid"): {"steps": 3000, **_SMALL, "lr": 2e-3, "latent_dim": 2, "model_options": _GRID},
    ("wgan-gp", "ring"): {"steps": 10000, "batch_size": 512, "lr_decay_start": 0.5, "lr": 2e-3, "critic_steps": 3,
                          "gp_lambda": 0.1, "g_ema": 0.999, "model_options": {"hidden": 64, "depth": 3}},
    ("wgan-gp", "grid"): {"steps": 10000, "batch_size": 256, "lr_decay_start": 0.5, "lr": 3e-3, "critic_steps": 3,
                          "gp_lambda": 0.1, "g_ema": 0.999, "latent_dim": 2, "model_options": {**_GRID, "hidden": 128}},
    ("unrolled-gan", "ring"): {"steps": 4000, "batch_size": 512, "lr_decay_start": 0.5, "lr": 1e-3, "unroll": 5,
                               "g_ema": 0.999, "model_options": {"hidden": 64, "depth": 3}},
    ("unrolled-gan", "grid"): {"steps": 8000, "batch_size": 256, "lr_decay_start": 0.5, "lr": 1e-3, "unroll": 5,
                               "g_ema": 0.999, "r1": 0.1, "latent_dim": 2, "model_options": {**_GRID, "hidden": 128}},
}


def _defaults(kind: str):
    """(data) -> this kind's defaults on that data: POINT_DEFAULTS on ring/grid, none on images."""
    return lambda data: POINT_DEFAULTS.get((kind, data), {})


RUN_FIELDS = ("critic_steps", "gp_lambda", "unroll", "lr_decay_start")
GAN_LOSS_KINDS = ("gan",)   # the kinds whose step takes --gan-loss
R1_KINDS = ("gan", "unrolled-gan")   # the kinds whose D step takes --r1
COMMON = dict(build=build_model, optimizers=pair_optimizers, run_fields=RUN_FIELDS, monitor=monitor)

DCGAN = Recipe(lr=2e-4, betas=(0.5, 0.999), build=_build_dcgan, optimizers=pair_optimizers,  # as pytorch/examples
               step=dcgan_step)
GAN = Recipe(lr=2e-4, betas=(0.5, 0.999), step=gan_step, real_batches=critic_steps, stuck="loss_d",
             hint=" or raise --critic-steps", defaults=_defaults("gan"), **COMMON)
# The WGAN-GP paper: 5 critic steps, lambda 10, Adam(1e-4, betas (0.5, 0.9)) as in its own code (gan_toy.py,
# gan_64x64.py; Algorithm 1 says beta1 = 0).
WGAN_GP = Recipe(lr=1e-4, betas=(0.5, 0.9), step=wgan_gp_step, real_batches=critic_steps,
                 hint=" or raise --gp-lambda", defaults=_defaults("wgan-gp"), **COMMON)
UNROLLED_GAN = Recipe(lr=2e-4, betas=(0.5, 0.999), step=unrolled_step, stuck="loss_d",
                      hint=" or lower --unroll", defaults=_defaults("unrolled-gan"), **COMMON)
