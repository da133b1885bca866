"""Latent edits measured on held-out faces: what `z += a * d_attr` does to every factor of the decoded image.

For each attribute: held-out faces in the lower half of that factor's range are encoded
(posterior means), moved by a * d for each amount a, decoded, and read back by (1) the
readout CNN (readout.py), which reads all 9 factors from pixels, and (2) for
eyes_open also the data set's exact ground-truth pixel measure (faces.measure_eyes_open).
Changes are reported as fractions of each factor's full range, relative to amount 0 (the
plain reconstruction), so the model's own reconstruction error does not count as an edit.
"""
from __future__ import annotations

import numpy as np
import torch

from latentforge.images import to_uint8

from ..attributes import encode_images
from ..data.faces import FACTORS, measure_eyes_open

AMOUNTS = (0.0, 0.5, 1.0, 1.5, 2.0)


def edited(model, value_range, images: np.ndarray, direction: np.ndarray, amounts=AMOUNTS) -> list[np.ndarray]:
    """uint8 images decoded from mu + a * direction, one array per amount."""
    mu = encode_images(model, images, value_range)
    out = []
    with torch.inference_mode():
        for a in amounts:
            z = torch.from_numpy((mu + np.float32(a) * direction).astype(np.float32))
            out.append(to_uint8(model.decode(z).numpy(), value_range))
    return out


def low_half(factors: np.ndarray, name: str) -> np.ndarray:
    """Indices of the faces whose `name` factor is below its midpoint: room for a + edit to show."""
    column = factors[:, FACTORS.index(name)]
    return np.flatnonzero(column < (column.min() + column.max()) / 2)


def eyes_open_readings(model, value_range, images, factors, direction, amounts=AMOUNTS) -> list[float]:
    """Mean ground-truth eye openness of the decoded faces at each amount."""
    return [float(measure_eyes_open(e, factors).mean()) for e in edited(model, value_range, images, direction, amounts)]


def edit_row(model, value_range, images, factors, name: str, direction, readout, amounts=AMOUNTS) -> dict:
    """One row of the edit table for attribute `name` (see the module docstring)."""
    pick = low_half(factors, name)
    images, factors = images[pick], factors[pick]
    outs = edited(model, value_range, images, direction, amounts)
    span = readout.high - readout.low
    read = np.stack([readout.factors(e).mean(0) for e in outs]) / span       # [amounts, factors], range fractions
    own = FACTORS.index(name)
    change = read[-1] - read[0]
    others = [j for j in range(len(FACTORS)) if j != own]
    leak = others[int(np.argmax(np.abs(change[others])))]
    row = {"attribute": name, "images": len(pick), "amounts": list(amounts),
           "own_readout": read[:, own].tolist(), "own_change": float(change[own]),
           "largest_other": FACTORS[leak], "largest_other_change": float(change[leak]),
           "monotonic": bool(np.all(np.diff(read[:, own]) > 0))}
    if name == "eyes_open":
        pixels = [float(measure_eyes_open(e, factors).mean()) for e in outs]
        row.update(pixel_measure=pixels, pixel_change=pixels[-1] - pixels[0],
                   pixel_monotonic=bool(np.all(np.diff(pixels) > 0)))
    return row
