"""An exponential moving average of the generator's weights (Yazıcı et al. 2019), for `--g-ema`.

A GAN's generator jitters around the equilibrium from step to step; the average of its recent
weights makes smoother, more varied samples than any one step's. The average is what a run
samples from and exports: the checkpoint holds it in place of the generator, while the resume
state keeps both the raw weights (the ones training continues from) and the average.
The decay ramps up as min(decay, (1 + t) / (10 + t)), a function of the step alone, so the
first steps are not averaged with the random init and a resumed run averages as one that never
stopped.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

PREFIX = "ema."   # the average's tensors in the resume state: ema.<generator state_dict key>


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
        """Take the average back from a resume state's ema.* tensors (all of them, or a ValueError)."""
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
        try:
            yield model
        finally:
            model.generator.load_state_dict(own)
