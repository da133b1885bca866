"""Loss pieces: the VAE's ELBO terms (per image, in nats), bits/dim, and the DCGAN min-max losses."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in closed form, summed over latent dims: [N, d] -> [N]."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=1)


def gaussian_nll(x: torch.Tensor, x_mean: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """-log N(x; x_mean, sigma^2 I) per image, summed over all pixels: [N, C, H, W] -> [N].

    sigma is a float (fixed) or a scalar tensor (learned, so the gradient reaches it)."""
    dims = x[0].numel()
    squared = ((x - x_mean) / sigma).square().flatten(1).sum(dim=1)
    return 0.5 * squared + dims * (torch.as_tensor(sigma).log() + 0.5 * LOG_2PI)


def bernoulli_nll(x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """-log Bernoulli(x; probs) per image for x in [0, 1] (binary cross-entropy summed over pixels)."""
    return F.binary_cross_entropy(probs, x, reduction="none").flatten(1).sum(dim=1)


def reconstruction_nll(x: torch.Tensor, x_out: torch.Tensor, model) -> torch.Tensor:
    """-log p(x|z) per image under the likelihood a ConvVAE's config names."""
    if model.config.likelihood == "bernoulli":
        return bernoulli_nll(x, x_out)
    return gaussian_nll(x, x_out, model.observation_sigma())


def vae_terms(model, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction NLL, KL) per image, one posterior sample z = mu + sigma * eps each."""
    x_out, mu, logvar = model(x, eps)
    return reconstruction_nll(x, x_out, model), kl_to_standard_normal(mu, logvar)


def bits_per_dim(elbo_nats: float, dims: int, value_range: tuple[float, float]) -> float:
    """Bits per dimension of a per-image ELBO (nats) on pixels quantized to 256 levels."""
    # The model's density p is over continuous values; 8-bit pixel k sits at lo + k * w with w = (hi - lo) / 255
    # (images.from_uint8), so its bin has width w and probability about p * w. So per image
    # log P(bins) ~= ELBO + D * ln(w), and bpd = -(ELBO + D * ln(w)) / (D * ln 2).
    lo, hi = value_range
    return -(elbo_nats + dims * math.log((hi - lo) / 255.0)) / (dims * math.log(2.0))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D is trained to call real 1 and fake 0 (pytorch/examples' errD_real + errD_fake)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating: G maximizes log D(G(z)) rather than minimizing log(1 - D(G(z)))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The hinge loss of SN-GAN and SAGAN (Miyato et al. 2018, Zhang et al. 2019): D is pushed to real >= 1 and
    fake <= -1 and no further, so a confident D stops pulling its logits apart."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


GAN_LOSSES = {"ns": (discriminator_loss, generator_loss), "hinge": (hinge_discriminator_loss, hinge_generator_loss)}
