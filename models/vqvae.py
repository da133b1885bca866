"""VQ-VAE (van den Oord et al. 2017): a conv encoder, a vector quantizer with an EMA codebook, a conv decoder.

The encoder maps an image to a grid of code_dim vectors at 1/2**downsample of its side; each
vector is replaced by its nearest codebook entry; the decoder maps the grid back. Gradients
pass the quantizer straight through. The codebook is not trained by gradients: it follows
an exponential moving average of the encoder outputs assigned to each code (the paper's
appendix), and a code that has gone unused is restarted on a random encoder output of the
batch, so the codebook does not shrink to a few live codes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentforge.errors import InputError

from .shapes import check_image_config

OUTPUTS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


@dataclass
class VQVAEConfig:
    image_size: int = 64
    channels: int = 3
    codebook_size: int = 256      # K
    code_dim: int = 32            # D
    downsample: int = 3           # stride-2 layers: the code grid is image_size / 2**downsample a side
    base_channels: int = 64
    res_blocks: int = 2
    output: str = "sigmoid"
    commitment: float = 0.25      # beta of the commitment loss, the VQ-VAE paper's value
    ema_decay: float = 0.99
    dead_after: float = 0.1       # a code whose EMA usage count (vectors per batch) falls below this is restarted

    def __post_init__(self) -> None:
        check_image_config(self.image_size, self.channels, 1)
        if not 2 <= self.codebook_size <= 65536:
            raise InputError(f"codebook_size must be in 2..65536, got {self.codebook_size!r}")
        if not 1 <= self.code_dim <= 1024:
            raise InputError(f"code_dim must be in 1..1024, got {self.code_dim!r}")
        if not 1 <= self.downsample <= 4 or self.image_size >> self.downsample < 2:
            raise InputError(f"downsample must be in 1..4 and leave a grid of >= 2 a side, got {self.downsample!r}")
        if not 1 <= self.base_channels <= 512 or not 0 <= self.res_blocks <= 8:
            raise InputError(f"base_channels must be in 1..512 and res_blocks in 0..8, "
                             f"got {self.base_channels!r}, {self.res_blocks!r}")
        if self.output not in OUTPUTS:
            raise InputError(f"output must be one of {sorted(OUTPUTS)}, got {self.output!r}")
        if not 0 < self.ema_decay < 1 or not self.commitment >= 0:
            raise InputError(f"ema_decay must be in (0, 1) and commitment >= 0, got {self.ema_decay!r}, "
                             f"{self.commitment!r}")

    @property
    def value_range(self) -> tuple[float, float]:
        return OUTPUTS[self.output]

    @property
    def grid_size(self) -> int:
        return self.image_size >> self.downsample

    def to_dict(self) -> dict:
        return asdict(self)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Quantizer(nn.Module):
    """Nearest-code lookup with an EMA codebook. Buffers, not parameters: no optimizer touches them."""

    def __init__(self, codebook_size: int, code_dim: int, decay: float, dead_after: float) -> None:
        super().__init__()
        self.decay, self.dead_after = decay, dead_after
        self.restarted = 0  # codes restarted by the last training batch, for the training log
        # Usage starts at zero, so the first training batch restarts every code it did not pick on one of its
        # own encoder outputs: a data-dependent initialization for free.
        self.register_buffer("codebook", torch.randn(codebook_size, code_dim))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("code_sum", torch.zeros(codebook_size, code_dim))

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, D, h, w] -> nearest code indices [N, h, w] (int64)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        distance = (flat.square().sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
                    + self.codebook.square().sum(1)[None])
        return distance.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices [N, h, w] -> code vectors [N, D, h, w]."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor, noise: torch.Generator | None = None):
        """(quantized z with a straight-through gradient, indices, commitment term per image [N]).

        In training mode this also moves the codebook (EMA) and restarts dead codes from the batch,
        drawing the restart positions from `noise`.
        """
        idx = self.indices(z)
        q = self.lookup(idx)
        commitment = (z - q.detach()).square().flatten(1).sum(1)
        if self.training:
            self._ema_update(z.detach(), idx, noise)
        return z + (q - z).detach(), idx, commitment

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, idx: torch.Tensor, noise: torch.Generator | None) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        onehot = F.one_hot(idx.reshape(-1), self.codebook.shape[0]).to(flat.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        # Laplace smoothing keeps a rarely used code's mean finite (Sonnet's VectorQuantizerEMA does the same).
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (total + self.codebook.shape[0] * 1e-5) * total
        self.codebook.copy_(self.code_sum / smoothed[:, None])
        dead = (self.cluster_size < self.dead_after).nonzero().flatten()
        self.restarted = len(dead)
        if len(dead):
            pick = torch.randint(0, len(flat), (len(dead),), generator=noise).to(flat.device)
            # Usage restarts at the threshold: a restarted code that the next batch does not use is restarted again
            # at once, instead of idling for the ~log(threshold)/log(decay) steps a larger start would take.
            self.codebook[dead] = flat[pick]
            self.cluster_size[dead] = self.dead_after
            self.code_sum[dead] = flat[pick] * self.dead_after


def usage(indices: torch.Tensor, codebook_size: int) -> tuple[float, int]:
    """(perplexity of the code histogram, codes never used) over a batch of indices."""
    counts = torch.bincount(indices.reshape(-1), minlength=codebook_size).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float(entropy.exp()), int((counts == 0).sum())


class VQVAE(nn.Module):
    kind = "vqvae"

    def __init__(self, config: VQVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or VQVAEConfig()
        c = cfg.base_channels
        down: list[nn.Module] = []
        c_in = cfg.channels
        for _ in range(cfg.downsample):
            down += [nn.Conv2d(c_in, c, 4, 2, 1), nn.ReLU()]
            c_in = c
        down += [nn.Conv2d(c, c, 3, 1, 1), *[ResBlock(c) for _ in range(cfg.res_blocks)], nn.ReLU(),
                 nn.Conv2d(c, cfg.code_dim, 1)]
        self.encoder = nn.Sequential(*down)
        self.quantizer = Quantizer(cfg.codebook_size, cfg.code_dim, cfg.ema_decay, cfg.dead_after)
        up: list[nn.Module] = [nn.Conv2d(cfg.code_dim, c, 3, 1, 1), *[ResBlock(c) for _ in range(cfg.res_blocks)]]
        for i in range(cfg.downsample):
            last = i == cfg.downsample - 1
            up += [nn.ReLU(), nn.ConvTranspose2d(c, cfg.channels if last else c, 4, 2, 1)]
        up.append(nn.Sigmoid() if cfg.output == "sigmoid" else nn.Tanh())
        self.decoder = nn.Sequential(*up)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in the value range -> code indices [N, h, w] (int64)."""
        return self.quantizer.indices(self.encoder(x))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices [N, h, w] -> images [N, C, H, W] in the value range."""
        return self.decoder(self.quantizer.lookup(indices))

    def forward(self, x: torch.Tensor, noise: torch.Generator | None = None):
        """(reconstruction, indices, commitment per image [N])."""
        q, idx, commitment = self.quantizer(self.encoder(x), noise)
        return self.decoder(q), idx, commitment
