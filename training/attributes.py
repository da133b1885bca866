"""Named latent directions from labels: mean posterior mean of the high group minus the low group.

Amount 1.0 moves a latent by the full difference between the two groups' means, so
`z + 1.0 * d["eyes_open"]` takes an average closed-eyed code to an average open-eyed one.
Directions are not normalized to unit length.
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
