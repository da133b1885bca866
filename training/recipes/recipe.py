"""What a recipe is, and the pieces several recipes share: loss checks, model building, lr decay.

The loop in train.py is shared; a recipe says how to build the model, which optimizers it has,
what one step does and (optionally) how to evaluate it on held-out data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Recipe:
    lr: float | Callable            # default learning rate, or (cfg) -> it
    betas: tuple[float, float]      # Adam betas
    build: Callable                 # (cfg, config) -> nn.Module, called under a seeded torch RNG
    optimizers: Callable            # (cfg, model, adam) -> [Optimizer]; adam(params, lr=None) uses betas and lr
                                    # (the run's learning rate unless given)
    step: Callable                  # (cfg, model, optimizers, x, noise: torch.Generator) -> {metric: float}
    evaluates: bool = False         # True: the loop computes held-out metrics with train.py's evaluator
    hint: str = ""                  # added to "lower --lr" when a loss becomes non-finite, e.g. " or --beta"
    configure: Callable | None = None  # (cfg, image_size, channels) -> model config; None: TrainConfig's own
    samples: Callable | None = None    # (model, seed, data) -> float images for samples_NNNNNN.png; None: decode z
    real_batches: Callable = lambda cfg: 1   # (cfg) -> real batches of batch_size the loop draws per step
    run_fields: tuple[str, ...] = ()         # TrainConfig fields that a resumed run must share
    monitor: Callable | None = None          # (cfg, model, data, step, run_dir, records) -> (metrics, warning);
                                             # replaces the sample grid; see recipes/gan_monitor.py
    stuck: str | None = None                 # a loss that must not settle at 0 (D winning outright)
    defaults: Callable = lambda data: {}     # (data name) -> TrainConfig fields this kind defaults to on that data,
                                             # for the fields the user left unset (gans.py: the 2-D point sets)


class NonFinite(ArithmeticError):
    """A loss that is NaN or Inf; the loop adds the step and what to do."""


def finite(name: str, loss: torch.Tensor) -> float:
    """The loss as a float, checked before any optimizer step can spread it into the weights."""
    value = loss.item()
    if not math.isfinite(value):
        raise NonFinite(f"{name} became {value}")
    return value


def normal(noise: torch.Generator, n: int, *dims: int) -> torch.Tensor:
    """n rows of N(0, 1) noise. Under several processes, this rank's slice of the rows of the whole global
    batch (training/distributed.py), so a rank's noise is the same whatever the number of ranks."""
    return _my_rows(torch.randn, noise, n, dims)


def uniform(noise: torch.Generator, n: int, *dims: int) -> torch.Tensor:
    """n rows of U(0, 1) noise, sliced per rank as `normal` is."""
    return _my_rows(torch.rand, noise, n, dims)


def _my_rows(draw, noise, n: int, dims: tuple) -> torch.Tensor:
    rank, size = getattr(noise, "rank", 0), getattr(noise, "world_size", 1)
    return draw(n * size, *dims, generator=noise)[rank * n:(rank + 1) * n]


def build_model(cfg, config):
    """The model class of `cfg.kind` with `config`, as models.MODELS names it."""
    from latentforge.models import MODELS

    return MODELS[cfg.kind][0](config)


def one_optimizer(cfg, model, adam) -> list:
    return [adam(model.parameters())]


def pair_optimizers(cfg, model, adam) -> list:
    """Discriminator first, generator last (decay_lr reads the generator's step count). With `--d-lr` the
    discriminator has its own learning rate (TTUR, Heusel et al. 2017)."""
    return [adam(model.discriminator.parameters(), lr=base_lrs(cfg, 2)[0]), adam(model.generator.parameters())]


def base_lrs(cfg, count: int) -> list[float]:
    """The undecayed learning rate of each of `count` optimizers: the run's, but a pair's discriminator (the
    first) takes `d_lr` when it is set."""
    rates = [cfg.learning_rate] * count
    if count == 2 and getattr(cfg, "d_lr", None) is not None:
        rates[0] = float(cfg.d_lr)
    return rates


def updates_done(opt: torch.optim.Optimizer) -> int:
    """Adam's own update count, which the resume state carries: training step t has done t - 1 updates."""
    for state in opt.state.values():
        return int(state["step"])
    return 0


def decay_lr(cfg, optimizers) -> None:
    """Linear decay to 0 from `lr_decay_start` of the run: a GAN's samples jitter with the step size, and a
    shrinking step lets them settle on the modes. The step count is the last optimizer's, so resume keeps it."""
    done = updates_done(optimizers[-1])
    start = cfg.lr_decay_start * cfg.steps
    scale = 1.0 if done < start else max(0.0, (cfg.steps - done) / max(cfg.steps - start, 1.0))
    for opt, base in zip(optimizers, base_lrs(cfg, len(optimizers))):
        for group in opt.param_groups:
            group["lr"] = base * scale
