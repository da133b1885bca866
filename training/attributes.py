"""Named latent directions from labels: mean posterior mean of the high group minus the low group.

Amount 1.0 moves a latent by the full difference between the two groups' means, so
`z + 1.0 * d["eyes_open"]` takes an average closed-eyed code to an average open-eyed one.
Directions are not normalized to unit length. `independent` (`--independent`) changes that meaning:
amount 1.0 then moves as far along the factor's own difference and not along the others'.
"""
from __future__ import annotations

import numpy as np
import torch

from latentforge.errors import InputError
from latentforge.images import from_uint8


def encode_images(model, images: np.ndarray, value_range: tuple[float, float], batch: int = 256) -> np.ndarray:
    """Posterior means [N, D] of uint8 NHWC images under a VAE."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(from_uint8(images[i:i + batch], value_range))
            out.append(model.encode(x)[0].numpy())
    return np.concatenate(out)


def attribute_directions(model, value_range, data, names: list[str] | None = None, n: int = 2000,
                         split: str = "train") -> dict[str, np.ndarray]:
    """One direction per attribute: the split is at the midpoint of the attribute's observed range."""
    names = list(data.attribute_names) if names is None else names
    unknown = [a for a in names if a not in data.attribute_names]
    if unknown:
        raise InputError(f"unknown attribute(s) {unknown}; {data.name} has {list(data.attribute_names)}")
    n = min(n, data.size(split))
    images, attrs = data.get(split, np.arange(n))
    mu = encode_images(model, images, value_range)
    directions = {}
    for name in names:
        a = attrs[:, data.attribute_names.index(name)]
        high = a > (a.min() + a.max()) / 2
        if high.all() or not high.any():
            raise InputError(f"attribute {name!r} takes a single value on {n} {split} images; no direction to learn")
        directions[name] = (mu[high].mean(0) - mu[~high].mean(0)).astype(np.float32)
    return directions


def sample_directions(model, value_range, label, names: list[str], low: np.ndarray, high: np.ndarray,
                      n: int = 4000, seed: int = 0, batch: int = 250) -> dict[str, np.ndarray]:
    """Directions of a model that decodes (a GAN's generator) fitted on its own samples, InterFaceGAN-style
    (Shen et al. 2020): n latents z ~ N(0, I) are decoded, `label` (uint8 NHWC images -> factors [n, k], e.g. the
    readout trained on the data's labels) reads every sample, and each direction is the mean z of the samples
    read in the high half of the factor's range [low, high] minus that of the low half. Amount 1.0 then takes an
    average sample read as low to an average one read as high, as `attribute_directions` does with real images.

    For a GAN whose encoder does not carry a factor (the encoder of a generator that rarely makes it), the
    directions of encoded labelled images do not move it; these do wherever the generator makes it at all."""
    from latentforge.images import to_uint8
    from latentforge.latents import latents

    if len(names) != len(low) or len(names) != len(high):
        raise InputError(f"{len(names)} factor names but {len(low)} low and {len(high)} high ends; give one each")
    z = latents(n, model.config.latent_dim, seed=seed)
    read = []
    with torch.inference_mode():
        for i in range(0, n, batch):
            images = to_uint8(model.decode(torch.from_numpy(z[i:i + batch])).numpy(), value_range)
            read.append(np.asarray(label(images), dtype=np.float32))
    read = np.concatenate(read)
    directions = {}
    for k, name in enumerate(names):
        is_high = read[:, k] > (low[k] + high[k]) / 2
        few = min(int(is_high.sum()), int((~is_high).sum()))
        if few < max(10, n // 100):
            raise InputError(f"only {few} of {n} samples are read in one half of {name!r}: the generator hardly makes "
                             "that side, so no direction can be fitted on its samples; use labelled images instead")
        directions[name] = (z[is_high].mean(0) - z[~is_high].mean(0)).astype(np.float32)
    return directions


def independent(directions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each direction with the others projected out (the conditional edit of InterFaceGAN, Shen et al. 2020, with
    every other factor as a condition): d' = d minus its least-squares fit on the other directions, scaled by
    |d|^2 / |d'|^2 so that d' . d = d . d. Amount 1.0 then moves a latent as far along the factor's own direction
    as before, and not at all along any other factor's: where the factors' directions overlap (in a GAN's latent
    eyes_open and glasses), an edit of one stops dragging the others along, to first order."""
    names = list(directions)
    if len(names) < 2:
        return dict(directions)
    out = {}
    for name in names:
        d = directions[name].astype(np.float64)
        others = np.stack([directions[o].astype(np.float64) for o in names if o != name], axis=1)
        residual = d - others @ np.linalg.lstsq(others, d, rcond=None)[0]
        left = float(residual @ residual)
        if left < 0.01 * float(d @ d):   # under a tenth of its length left: scaled up more than 10x, off the prior
            raise InputError(f"the direction of {name!r} lies almost in the span of the other {len(names) - 1} "
                             f"({left / float(d @ d):.1%} of its square length is its own): nothing is left of it "
                             "to move alone; drop --independent")
        out[name] = (residual * (float(d @ d) / left)).astype(np.float32)
    return out
