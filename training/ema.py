"""An exponential moving average of the generator's weights (Yazıcı et al. 2019), for `--g-ema`.

A GAN's generator jitters around the equilibrium from step to step; the average of its recent
weights makes smoother, more varied samples than any one step's. The average is what a run
samples from and exports: the checkpoint holds it in place of the generator, while the resume
state keeps both the raw weights (the ones training continues from) and the average.
The decay ramps up as min(decay, (1 + t) / (10 + t)), a function of the step alone, so the
first steps are not averaged with the random init and a resumed run averages as one that never
stopped. The average watches the training and never steers it, so a run may resume with another
decay, or without one (its checkpoint then holds the raw generator), and trains the same weights.

BatchNorm's running statistics are not weights: averaged, they belong to no generator, and the
averaged generator in eval mode makes washed-out, blurry images (FD 17.8 against the raw
generator's 14.9 at step 400 of a faces run). So whenever the average is swapped in, its
statistics are measured afresh on STANDING_BATCHES batches of fixed noise ("standing statistics",
as BigGAN samples its averaged generator): 12.9 on the same checkpoint.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

PREFIX = "ema."   # the average's tensors in the resume state: ema.<generator state_dict key>
STANDING_BATCHES, STANDING_BATCH, STANDING_SEED = 16, 64, 0


class GeneratorAverage:
    def __init__(self, generator: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.tensors = {k: v.detach().clone() for k, v in generator.state_dict().items()}

    @torch.no_grad()
    def update(self, generator: torch.nn.Module, step: int) -> None:
        """Fold in the generator's weights after training step `step` (1-based). Integer buffers (BatchNorm's
        batch count) are copied, float ones (weights, running statistics) averaged."""
        keep = min(self.decay, (1.0 + step) / (10.0 + step))
        for name, value in generator.state_dict().items():
            if value.is_floating_point():
                self.tensors[name].mul_(keep).add_(value.detach(), alpha=1.0 - keep)
            else:
                self.tensors[name].copy_(value)

    def state(self) -> dict[str, torch.Tensor]:
        return {PREFIX + k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Take the average back from a resume state's ema.* tensors. A state without them (a run that had no
        average until now) leaves the average where it starts: at the resumed generator's weights."""
        if not any(key.startswith(PREFIX) for key in state):
            state = {PREFIX + k.removeprefix("model.generator."): v for k, v in state.items()
                     if k.startswith("model.generator.")}
        missing = sorted(k for k in self.tensors if PREFIX + k not in state)
        if missing:
            raise ValueError(f"the state has no generator average for {missing[:3]}")
        for name, value in self.tensors.items():
            value.copy_(state[PREFIX + name])

    @contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The model with the average as its generator for the block; its own weights back after, exactly."""
        own = {k: v.detach().clone() for k, v in model.generator.state_dict().items()}
        model.generator.load_state_dict(self.tensors)
        standing_statistics(model.generator, model.config.latent_dim)
        try:
            yield model
        finally:
            model.generator.load_state_dict(own)


@torch.no_grad()
def standing_statistics(generator: torch.nn.Module, latent_dim: int) -> None:
    """Set every BatchNorm's running mean and variance to their average over STANDING_BATCHES batches of the
    generator's own activations on fixed noise (the same noise every time, so a resumed run saves the same)."""
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    device = next(generator.parameters()).device
    noise = torch.Generator().manual_seed(STANDING_SEED)
    momenta = [m.momentum for m in norms]
    was_training = generator.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None     # a cumulative average over the batches below
    generator.train()
    for _ in range(STANDING_BATCHES):
        generator(torch.randn(STANDING_BATCH, latent_dim, generator=noise).to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    generator.train(was_training)
