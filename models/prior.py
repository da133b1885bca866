"""A code prior for a VQ-VAE: a small causal transformer over the code grid in raster order.

The "prior" model carries its VQ-VAE inside (frozen), so one checkpoint samples images:
the transformer draws a code grid token by token, the VQ-VAE's decoder turns it into an
image. Token K (the codebook size) is a start token that is never sampled. The transformer
maps tokens [N, T] to next-code logits [N, T, K] (training, NLL); sampling feeds it one token
at a time over a key/value cache (CachedLogits on torch, PriorStep as the exported graph). The
sampling loop runs outside any graph (NumPy, seeded PCG64 in latentforge.runtime.vq_sampling)
so every backend draws the same codes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from latentforge.errors import InputError

from .vqvae import VQVAE, VQVAEConfig


@dataclass
class PriorConfig:
    vqvae: dict = field(default_factory=dict)   # the VQVAEConfig of the VQ-VAE whose codes this models
    layers: int = 4
    width: int = 128
    heads: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.vqvae, VQVAEConfig):
            self.vqvae = self.vqvae.to_dict()
        self.vq = VQVAEConfig(**self.vqvae)
        if not 1 <= self.layers <= 24 or not 1 <= self.heads <= 32:
            raise InputError(f"layers must be in 1..24 and heads in 1..32, got {self.layers!r}, {self.heads!r}")
        if not 8 <= self.width <= 2048 or self.width % self.heads:
            raise InputError(f"width must be in 8..2048 and divisible by heads ({self.heads}), got {self.width!r}")

    @property
    def value_range(self) -> tuple[float, float]:
        return self.vq.value_range

    @property
    def sequence_length(self) -> int:
        return self.vq.grid_size ** 2

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "vq"}


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def _qkv(self, x: torch.Tensor):
        n, t, c = x.shape
        return self.qkv(x).view(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        n, _, t, d = y.shape
        return self.out(y.transpose(1, 2).reshape(n, t, self.heads * d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # PyTorch's fused attention (1.5x faster to train here than written out); torch.onnx lowers it to plain
        # MatMul/Softmax with a Trilu mask. tests/test_vq.py checks it against the formula written out.
        q, k, v = self._qkv(x)
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def step(self, x: torch.Tensor, cache: list) -> torch.Tensor:
        """x [N, t, C], the positions after those in `cache` ([] or [keys, values] of [N, heads, t0, d]), which
        grows by t. Each new position attends to the cached ones and to the new ones up to itself."""
        q, k, v = self._qkv(x)
        if cache:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        cache[:] = [k, v]
        t, total = q.shape[2], k.shape[2]
        if t == 1:   # the sampling loop's case: one new position sees everything cached, so no mask to build
            return self._merge(F.scaled_dot_product_attention(q, k, v))
        allowed = torch.ones(t, total, dtype=torch.bool, device=x.device).tril(total - t)
        return self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + (self.attention(h) if cache is None else self.attention.step(h, cache))
        return x + self.mlp(self.norm2(x))


class CodeTransformer(nn.Module):
    """tokens [N, T] (int64; token 0 is the start token K) -> logits [N, T, K] for the next code."""

    def __init__(self, codebook_size: int, length: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.token = nn.Embedding(codebook_size + 1, width)
        self.position = nn.Parameter(torch.zeros(length, width))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, codebook_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.token(tokens) + self.position[:tokens.shape[1]]
        return self.head(self.norm(self.blocks(h)))

    def step(self, tokens: torch.Tensor, caches: list[list]) -> torch.Tensor:
        """Logits of the positions after those cached: `forward` on the whole sequence, without recomputing it."""
        start = caches[0][0].shape[2] if caches and caches[0] else 0
        h = self.token(tokens) + self.position[start:start + tokens.shape[1]]
        for block, cache in zip(self.blocks, caches):
            h = block(h, cache)
        return self.head(self.norm(h))


class PriorStep(nn.Module):
    """One sampling step over a fixed-size key/value cache, for graphs with static shapes (ONNX, TensorRT).

    (token [N] int64, position [1] int64, cache [N, layers, 2, heads, T, d]) -> (logits [N, K] of the code after
    `token`, kv [N, layers, 2, heads, d]: this position's keys and values, which the caller writes into slot
    `position` of its cache). `token` is the token at `position` (the start token K at 0). Only slots before
    `position` count; the rest may hold any finite values. The graph reads the cache and writes only `kv`, so
    a step costs one position, not the whole prefix (onnxruntime on CPU reads the caller's array in place).
    Same numbers as `CodeTransformer.forward`'s row `position` (tests/test_vq.py).
    """

    def __init__(self, transformer: CodeTransformer) -> None:
        super().__init__()
        self.transformer = transformer
        # A Python float, so a float64 graph gets it in float64 (from q.shape the exporter computes it in float32).
        attention = transformer.blocks[0].attention
        self.scale = (transformer.position.shape[1] // attention.heads) ** -0.5

    def empty_cache(self, n: int) -> torch.Tensor:
        tr = self.transformer
        attention = tr.blocks[0].attention
        width = tr.position.shape[1]
        return torch.zeros(n, len(tr.blocks), 2, attention.heads, tr.position.shape[0], width // attention.heads)

    def forward(self, token: torch.Tensor, position: torch.Tensor, cache: torch.Tensor):
        tr = self.transformer
        n, length = token.shape[0], tr.position.shape[0]
        unwritten = torch.arange(length, device=token.device) >= position   # [T]: this slot and the future
        h = tr.token(token) + tr.position.index_select(0, position.reshape(1))   # [N, C]
        kv = []
        for i, block in enumerate(tr.blocks):
            attention = block.attention
            q, k, v = attention.qkv(block.norm1(h)).view(n, 3, attention.heads, -1).unbind(1)   # [N, heads, d]
            scale = self.scale
            earlier = (cache[:, i, 0] @ q[..., None]).squeeze(-1) * scale             # [N, heads, T]
            # A finite mask, not -inf: exp underflows to exactly 0 all the same, and the fp16 variant's range check
            # (export/precision.py) does not take an infinity for an overflow.
            earlier = earlier.masked_fill(unwritten, -1e4)
            weights = torch.cat([earlier, (k * q).sum(-1, keepdim=True) * scale], -1).softmax(-1)
            y = (weights[:, :, None, :-1] @ cache[:, i, 1]).squeeze(2) + weights[..., -1:] * v   # [N, heads, d]
            h = h + attention.out(y.reshape(n, -1))
            h = h + block.mlp(block.norm2(h))
            kv.append(torch.stack([k, v], 1))
        return tr.head(tr.norm(h)), torch.stack(kv, 1)


class CachedLogits:
    """`tokens [N, t] -> logits [N, 1, K]` of the last position for a sampling loop that appends one token per
    call (latentforge.runtime.vq_sampling.sample_codes): keys and values of the earlier positions are kept, so a
    call costs one position, not t. A call that does not extend the last one by one token starts afresh."""

    def __init__(self, transformer: CodeTransformer) -> None:
        self.transformer, self.tokens, self.caches = transformer, None, []

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        seen = self.tokens
        if seen is None or seen.shape[0] != tokens.shape[0] or seen.shape[1] != tokens.shape[1] - 1 \
                or not torch.equal(seen, tokens[:, :-1]):
            self.caches = [[] for _ in self.transformer.blocks]
            new = tokens
        else:
            new = tokens[:, -1:]
        self.tokens = tokens.clone()   # the caller may reuse its buffer
        return self.transformer.step(new, self.caches)[:, -1:]

    @classmethod
    def numpy(cls, transformer: CodeTransformer):
        """A fresh cache as the NumPy function the sampling loop takes: int64 tokens -> float32 logits."""
        cached = cls(transformer)
        device = transformer.position.device
        return lambda tokens: cached(torch.from_numpy(tokens).to(device)).float().cpu().numpy()


class VQPrior(nn.Module):
    kind = "prior"

    def __init__(self, config: PriorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or PriorConfig()
        self.vqvae = VQVAE(cfg.vq)
        self.transformer = CodeTransformer(cfg.vq.codebook_size, cfg.sequence_length, cfg.width, cfg.layers,
                                           cfg.heads)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vqvae.eval()  # frozen: its codebook must not move while the prior learns its codes
        return self

    def start_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """Code grids [N, h, w] -> transformer input [N, T]: the start token, then all codes but the last."""
        flat = codes.reshape(codes.shape[0], -1)
        start = torch.full_like(flat[:, :1], self.config.vq.codebook_size)
        return torch.cat([start, flat[:, :-1]], dim=1)

    def nll(self, codes: torch.Tensor) -> torch.Tensor:
        """-log p(codes) per image, in nats: [N, h, w] -> [N]."""
        logits = self.transformer(self.start_tokens(codes))
        return F.cross_entropy(logits.transpose(1, 2), codes.reshape(codes.shape[0], -1), reduction="none").sum(1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vqvae.decode(codes)


class PolynomialGELU(nn.Module):
    """GELU with erf from Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7): only Abs, Exp, Sign and arithmetic,
    which onnxruntime runs in float64 (its Erf is float32 only)."""

    A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
    P = 0.3275911

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x * 0.7071067811865476
        t = 1.0 / (1.0 + self.P * u.abs())
        poly = t * (self.A[0] + t * (self.A[1] + t * (self.A[2] + t * (self.A[3] + t * self.A[4]))))
        erf = torch.sign(u) * (1.0 - poly * torch.exp(-u * u))
        return 0.5 * x * (1.0 + erf)


def exact_step(transformer: CodeTransformer) -> PriorStep:
    """The codec's prior (runtime/codec_probs.py): PriorStep over a float64 copy of `transformer` with
    PolynomialGELU, so torch and onnxruntime compute it within ~1e-12 of each other."""
    import copy

    twin = copy.deepcopy(transformer).double().eval()
    for block in twin.blocks:
        block.mlp[1] = PolynomialGELU()
    return PriorStep(twin).eval()
