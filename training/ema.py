"""An exponential moving average of a GAN generator's weights, the one the checkpoint and samples use.

Yazıcı et al. 2019 ("The unusual effectiveness of averaging in GAN training"): the generator's
iterates circle around the equilibrium, and their average lies closer to it, so its samples are
sharper. Each training step does avg <- decay * avg + (1 - decay) * weights for the generator's
parameters (its buffers, e.g. BatchNorm statistics, are used as they are). Training itself never
sees the average: the checkpoint written for sampling, evaluation and export holds it, and the
resume state holds both, so a resumed run stays bit-identical.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from latentforge.errors import TrainingError

PREFIX = "ema."   # the averaged parameters' names in the resume state: ema.generator.<name>


class GeneratorAverage:
    def __init__(self, model, decay: float) -> None:
        self.decay = float(decay)
        self.names = [f"generator.{name}" for name, _ in model.generator.named_parameters()]
        self.params = [p for _, p in model.generator.named_parameters()]
        self.averages = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        for avg, p in zip(self.averages, self.params):
            avg.lerp_(p, 1.0 - self.decay)

    def state(self) -> dict[str, torch.Tensor]:
        """The averages as resume-state tensors."""
        return {PREFIX + name: avg.detach().cpu().contiguous() for name, avg in zip(self.names, self.averages)}

    def load(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        missing = [PREFIX + name for name in self.names if PREFIX + name not in tensors]
        if missing:
            raise TrainingError(f"training state {where} has no generator average ({missing[0]} ...), so it cannot "
                                "be resumed with --ema; start a new --out")
        with torch.no_grad():
            for name, avg in zip(self.names, self.averages):
                value = tensors[PREFIX + name]
                if value.shape != avg.shape:
                    raise TrainingError(f"training state {where}: {PREFIX + name} has shape {list(value.shape)}, "
                                        f"the parameter {list(avg.shape)}; the file is damaged: start a new --out")
                avg.copy_(value)

    @contextmanager
    def applied(self):
        """The generator holds the averaged weights inside the block, its own again after it."""
        with torch.no_grad():
            own = [p.detach().clone() for p in self.params]
            for p, avg in zip(self.params, self.averages):
                p.copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in zip(self.params, own):
                    p.copy_(value)
