"""`latentforge evaluate` for a VQ-VAE (reconstruction, codebook usage) and for its prior (+ code NLL, FD).

FD is "FD (domain features)": the Fréchet distance between held-out images and prior samples
in the 64-d features of a readout CNN trained on the data set's own labels (readout.py);
it needs a labelled data set (faces, digits, or a folder with labels).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from latentforge.checkpoint import load_checkpoint
from latentforge.errors import InputError
from latentforge.images import from_uint8, to_uint8

from .vae import held_out

DEFAULT_N = 500


def _options(options) -> tuple[int, int]:
    n, seed = options.get("n", DEFAULT_N), options.get("seed", 0)
    if not isinstance(n, int) or n < 2:
        raise InputError(f"n must be an integer >= 2, got {n!r}")
    return n, seed


@torch.inference_mode()
def vq_numbers(vqvae, images: np.ndarray, value_range) -> tuple[dict, torch.Tensor]:
    """Reconstruction MSE, code perplexity and unused codes on images; also their codes [N, h, w]."""
    from latentforge.models.vqvae import usage

    codes, sq_err = [], []
    for i in range(0, len(images), 64):
        x = torch.from_numpy(from_uint8(images[i:i + 64], value_range))
        idx = vqvae.encode(x)
        sq_err.append((vqvae.decode(idx) - x).square().flatten(1).mean(1))
        codes.append(idx)
    codes = torch.cat(codes)
    perplexity, unused = usage(codes, vqvae.config.codebook_size)
    return {"recon_mse": torch.cat(sq_err).mean().item(), "perplexity": perplexity, "unused_codes": unused}, codes


def _table(n: int, numbers: dict, k: int) -> list:
    return [("held-out images", n, ""), ("reconstruction MSE", numbers["recon_mse"], "per pixel, model range"),
            ("code perplexity", numbers["perplexity"], f"of {k} codes"),
            ("codes unused on held-out", numbers["unused_codes"], "")]


def evaluate_vqvae(path, info, options) -> dict:
    n, _ = _options(options)
    model, info = load_checkpoint(path)
    _, images, _ = held_out(info, n)
    numbers, _ = vq_numbers(model, images, info.value_range)
    return {"n": len(images), **numbers, "table": _table(len(images), numbers, model.config.codebook_size)}


@torch.inference_mode()
def prior_samples(model, n: int, seed: int, temperature: float = 1.0, top_k: int | None = None) -> np.ndarray:
    """n uint8 images drawn by the prior (torch), with the runtime's NumPy sampling loop."""
    from latentforge.models.prior import CachedLogits
    from latentforge.runtime.vq_sampling import sample_chunks

    cfg = model.config.vq
    codes = sample_chunks(lambda: CachedLogits.numpy(model.transformer), n, cfg.grid_size, cfg.codebook_size, seed,
                          temperature, top_k)
    return np.concatenate([to_uint8(model.decode(torch.from_numpy(codes[i:i + 256])).numpy(), cfg.value_range)
                           for i in range(0, n, 256)])


@torch.inference_mode()
def code_nll(model, codes: torch.Tensor) -> tuple[float, float]:
    """The prior's mean -log p(code grid): (nats per image, bits per code)."""
    nll = torch.cat([model.nll(codes[i:i + 64]) for i in range(0, len(codes), 64)]).mean().item()
    return nll, nll / codes[0].numel() / math.log(2)


def evaluate_prior(path, info, options) -> dict:
    from .readout import frechet_distance, readout_for

    n, seed = _options(options)
    model, info = load_checkpoint(path)
    data, images, _ = held_out(info, n, model.config.vq.image_size)
    numbers, codes = vq_numbers(model.vqvae, images, info.value_range)
    nll, per_code = code_nll(model, codes)
    result = {"n": len(images), **numbers, "code_nll_nats": nll, "code_nll_bits_per_code": per_code}
    table = _table(len(images), numbers, model.config.vq.codebook_size)
    table += [("prior NLL of held-out codes", nll, "nats/image"), ("prior NLL", per_code, "bits/code")]
    if data.attribute_names:
        readout, score = readout_for(data)
        samples = prior_samples(model, len(images), seed)
        result["fd_prior_vs_data"] = frechet_distance(readout.features(samples), readout.features(images))
        result["readout_score"] = score
        table.append((f"FD (domain features) prior samples vs held-out, n={len(images)}",
                      result["fd_prior_vs_data"], ""))
    result["table"] = table
    return result
