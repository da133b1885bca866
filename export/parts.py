"""What can be exported from a model, per kind: decoder, encoder, the real-time filter, and (VQ models) the prior.

A part (graph.Part) is an nn.Module with named inputs and outputs plus a way to draw inputs for it
from the model itself (latents for a decoder, the model's own decoded images for an encoder or filter),
so calibration and parity need no data set. The module is also the plain-PyTorch reference every
exported variant of the part is checked against. `PARTS` says which parts each kind has.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from latentforge.errors import ExportError
from latentforge.images import to_uint8
from latentforge.latents import latents

from . import vq
from .graph import Decode, Part
from .source import Source


class Encoder(nn.Module):
    """image float32 [N, C, H, W] in the value range -> (mu, logvar) [N, D]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        return self.model.encode(image)


class Filter(nn.Module):
    """The real-time filter in one graph: camera bytes in, display bytes out.

    frame uint8 [N, H, W, C], offset float32 [N, D], temperature float32 [1], eps float32 [N, D]
    -> frame_out uint8 [N, H, W, C], finite uint8 [N]; z = mu + temperature * exp(logvar / 2) * eps + offset.
    `finite` is 1 where the decoded image held no NaN/Inf: uint8 cannot carry a NaN, so the runtime's NaN
    guard reads it (runtime/nan_guard.py).
    The byte conversions are latentforge.images.from_uint8 / to_uint8 op for op: scale then
    shift in, shift then scale out, round half to even, NaN -> 0, clamp to 0..255.
    """

    def __init__(self, model: nn.Module, value_range: tuple[float, float]) -> None:
        super().__init__()
        self.model = model
        self.lo, self.hi = float(value_range[0]), float(value_range[1])

    def forward(self, frame: torch.Tensor, offset: torch.Tensor, temperature: torch.Tensor, eps: torch.Tensor):
        scale_in = torch.tensor((self.hi - self.lo) / 255.0, dtype=torch.float32)  # float32, as from_uint8 rounds it
        x = frame.permute(0, 3, 1, 2).to(torch.float32) * scale_in + self.lo
        mu, logvar = self.model.encode(x)
        z = mu + temperature * torch.exp(0.5 * logvar) * eps + offset
        decoded = self.model.decode(z)
        # x - x is NaN exactly where x is NaN or +-Inf (IsInf takes no fp16 before opset 20; Sub and IsNaN do)
        finite = (~torch.isnan(decoded - decoded)).flatten(1).all(1).to(torch.uint8)
        y = (decoded - self.lo) * (255.0 / (self.hi - self.lo))
        y = torch.where(torch.isnan(y), torch.zeros_like(y), y)
        y = torch.clamp(torch.round(y), 0.0, 255.0).to(torch.uint8)
        return y.permute(0, 2, 3, 1), finite


def _own_images(source: Source, n: int, seed: int | None) -> np.ndarray:
    """Images the model itself draws from latents: in-distribution inputs for an encoder, no data set needed."""
    with torch.inference_mode():
        return source.model.decode(torch.from_numpy(latents(n, source.latent_dim, seed))).contiguous().numpy()


def decoder_part(source: Source) -> Part:
    """z float32 [N, D] -> image float32 [N, C, H, W] in the model's value range."""
    if source.latent_dim < 1:
        raise ExportError(f"a {source.kind!r} model has no latent vector to decode from, and no exporter of its "
                          "own is registered for this part; update latentforge")

    def make(n, seed):
        return {"z": latents(n, source.latent_dim, seed)}

    return Part("decoder", Decode(source.model), make, ["image"], {"image": source.peak}, source.metadata("decoder"))


def _needs_encoder(source: Source, part: str) -> None:
    if not hasattr(source.model, "encode"):
        raise ExportError(f"--part {part} needs an encoder, and a {source.kind} model has none; "
                          "export --part decoder, or use a VAE checkpoint, or a gan-encoder trained for this "
                          "generator (`latentforge train gan-encoder GAN_CHECKPOINT`)")


def encoder_part(source: Source) -> Part:
    _needs_encoder(source, "encoder")

    def make(n, seed):
        return {"image": _own_images(source, n, seed)}

    # PSNR of mu and logvar is taken against the prior's +-3 sigma span: an error in units of the latent
    # scale the decoder sees, not of one batch's (for an untrained model, tiny) spread.
    return Part("encoder", Encoder(source.model), make, ["mu", "logvar"], {"mu": 6.0, "logvar": 6.0},
                source.metadata("encoder"))


def filter_part(source: Source) -> Part:
    """The exported filter and the runtime's in-memory filter graph (runtime/filter_graph.py) both come from here."""
    _needs_encoder(source, "filter")

    def make(n, seed):
        rng = np.random.default_rng(seed)
        frame = to_uint8(_own_images(source, n, seed), source.value_range)
        offset = (0.5 * rng.standard_normal((n, source.latent_dim))).astype(np.float32)
        return {"frame": frame, "offset": offset, "temperature": np.array([0.5], np.float32),
                "eps": latents(n, source.latent_dim, None if seed is None else seed + 1)}

    # Bytes agree to one step: float rounding may flip a .5 either way.
    return Part("filter", Filter(source.model, source.value_range), make, ["frame_out", "finite"],
                {"frame_out": 255.0, "finite": 1.0},
                source.metadata("filter"), fixed=("temperature",), atol=1.0, rtol=0.0)


LATENT_PARTS: dict[str, Callable[[Source], Part]] = {
    "decoder": decoder_part, "encoder": encoder_part, "filter": filter_part}
VQ_PARTS: dict[str, Callable[[Source], Part]] = {"decoder": vq.decoder_part, "prior": vq.prior_part}
# The parts of each kind; "foreign" is a user's own generator (export/foreign.py). The GAN kinds' image generator
# is the DCGAN generator (their 2-D point models are refused by export/source.py).
PARTS: dict[str, dict[str, Callable[[Source], Part]]] = {
    "vae": LATENT_PARTS, "dcgan": LATENT_PARTS, "foreign": LATENT_PARTS, "vqvae": VQ_PARTS, "prior": VQ_PARTS,
    "gan": LATENT_PARTS, "wgan-gp": LATENT_PARTS, "unrolled-gan": LATENT_PARTS}


def build_part(source: Source, part: str) -> Part:
    builders = PARTS.get(source.kind)
    if builders is None:
        raise ExportError(f"latentforge exports {sorted(PARTS)} models, not {source.kind!r}")
    if part not in builders:
        if part == "prior":
            raise ExportError(f"--part prior exports a VQ model's code prior; {source.kind!r} models have none "
                              "(train a VQ-VAE, or export --part decoder)")
        raise ExportError(f"a {source.kind} model has no {part!r} part; choose one of {sorted(builders)}")
    return builders[part](source)


# A gan-encoder (models/gan_encoder.py) encodes into its bundled generator's latent, so it has every latent part.
PARTS["gan-encoder"] = LATENT_PARTS
