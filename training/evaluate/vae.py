"""`latentforge evaluate` for VAEs: held-out bounds, reconstruction, KL per dimension, active units, MIG.

Bounds (nats per image, then bits/dim on 8-bit pixel bins): with k posterior samples z_i ~ q(z|x),
log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x); the ELBO is the mean of log w_i and the
importance-weighted bound (IWAE, Burda et al. 2016) is log (1/k) sum exp(log w_i). By Jensen the
IWAE bound on the same samples is never below the ELBO, and both are below log p(x).
Active units follow Burda et al. too: dimension u is active if Cov_x(E_q[z_u]) > 0.01.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from latentforge.checkpoint import load_checkpoint
from latentforge.errors import InputError
from latentforge.images import from_uint8

from .. import losses
from ..attributes import encode_images
from ..data import open_data
from .mig import mig

DEFAULT_N = 500
DEFAULT_K = 64
MIG_N = 10_000
ACTIVE_THRESHOLD = 0.01


def log_weights(model, x: torch.Tensor, k: int, noise: torch.Generator) -> torch.Tensor:
    """log p(x, z_i) - log q(z_i | x) for k posterior samples per image: [N, k], in nats."""
    mu, logvar = model.encode(x)
    eps = torch.randn(k, *mu.shape, generator=noise).to(mu.device)       # [k, N, d]
    z = mu + eps * torch.exp(0.5 * logvar)
    x_out = model.decode(z.flatten(0, 1))
    log_px = -losses.reconstruction_nll(x.repeat(k, 1, 1, 1), x_out, model).view(k, -1)
    log_pz = -0.5 * (z.square() + losses.LOG_2PI).sum(-1)
    log_qz = -0.5 * (eps.square() + logvar + losses.LOG_2PI).sum(-1)
    return (log_px + log_pz - log_qz).t()


def bounds(model, x: torch.Tensor, k: int, noise: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(ELBO, IWAE-k) per image [N], from the same k samples."""
    w = log_weights(model, x, k, noise)
    return w.mean(1), torch.logsumexp(w, 1) - math.log(k)


def held_out(info, n: int, image_size: int | None = None):
    """The data set a checkpoint was trained on, and the first n images (and attributes) of its test split."""
    data = open_data(info.data, image_size=image_size or info.config["image_size"])
    n = min(n, data.size("test"))
    images, attrs = data.get("test", np.arange(n))
    return data, images, attrs


def faces_mig(model, value_range, image_size: int, n: int | None = None) -> dict:
    """MIG of the posterior means of n (default MIG_N) training faces against their 9 ground-truth factors."""
    n = n or MIG_N
    data = open_data("faces", image_size=image_size)
    images, factors = data.get("train", np.arange(n))
    return mig(encode_images(model, images, value_range), factors, list(data.attribute_names))


def evaluate_vae(path, info, options) -> dict:
    n, k, seed = options.get("n", DEFAULT_N), options.get("k", DEFAULT_K), options.get("seed", 0)
    if not (isinstance(n, int) and n > 0 and isinstance(k, int) and k > 0):
        raise InputError(f"n and k must be positive integers, got n={n!r}, k={k!r}")
    model, info = load_checkpoint(path)
    try:
        data, images, _ = held_out(info, n)
    except InputError as e:
        raise InputError(f"cannot open the data set {info.data!r} this VAE was trained on: {e}") from None
    noise = torch.Generator().manual_seed(seed)
    elbo, iwae, sq_err, kl_dims, means = [], [], [], [], []
    with torch.inference_mode():
        for i in range(0, len(images), 32):
            x = torch.from_numpy(from_uint8(images[i:i + 32], info.value_range))
            e, w = bounds(model, x, k, noise)
            elbo.append(e)
            iwae.append(w)
            mu, logvar = model.encode(x)
            sq_err.append((model.decode(mu) - x).square().flatten(1).mean(1))
            kl_dims.append(0.5 * (mu.square() + logvar.exp() - 1.0 - logvar))
            means.append(mu)
    elbo, iwae = torch.cat(elbo).mean().item(), torch.cat(iwae).mean().item()
    kl_per_dim = torch.cat(kl_dims).mean(0).numpy()
    activity = torch.cat(means).var(0).numpy()
    active = int((activity > ACTIVE_THRESHOLD).sum())
    dims = int(np.prod(images.shape[1:]))
    result = {"n": len(images), "k": k, "elbo_nats": elbo, "iwae_nats": iwae,
              "recon_mse": torch.cat(sq_err).mean().item(), "kl_nats": float(kl_per_dim.sum()),
              "kl_per_dim": kl_per_dim.tolist(), "activity_per_dim": activity.tolist(), "active_units": active}
    table = [("held-out images", len(images), ""), ("ELBO", elbo, "nats/image"),
             (f"IWAE (k={k})", iwae, "nats/image")]
    if model.config.likelihood == "gaussian":  # a Bernoulli "likelihood" of grey values has no pixel bins
        result["elbo_bpd"] = losses.bits_per_dim(elbo, dims, info.value_range)
        result["iwae_bpd"] = losses.bits_per_dim(iwae, dims, info.value_range)
        table += [("ELBO", result["elbo_bpd"], "bits/dim"), (f"IWAE (k={k})", result["iwae_bpd"], "bits/dim")]
    table += [("reconstruction MSE (posterior mean)", result["recon_mse"], "per pixel, model range"),
              ("KL(q(z|x) || p(z))", result["kl_nats"], "nats/image"),
              ("active units (Cov_x E[z_u] > 0.01)", f"{active}/{len(kl_per_dim)}", ""),
              ("KL per dim", " ".join(f"{v:.2f}" for v in kl_per_dim), "nats")]
    if data.name == "faces" and model.config.latent_dim >= 2 and options.get("mig", True):
        m = faces_mig(model, info.value_range, info.config["image_size"])
        result["mig"], result["mig_per_factor"] = m["mig"], m["per_factor"]
        table.append((f"MIG (9 faces factors, {MIG_N} train faces)", m["mig"], ""))
    result["table"] = table
    return result
