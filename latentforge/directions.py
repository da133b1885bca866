"""Attribute-direction files: named latent directions in one `.safetensors` file (NumPy only, no torch).

Tensors: one float32 [latent_dim] per attribute name. Metadata: `latentforge.kind` =
"attributes", `latentforge.latent_dim`, `latentforge.checkpoint` (what encoded the images),
`latentforge.data` and `latentforge.method`. Amount 1.0 along a direction moves a latent by
the full difference between the low and the high group (directions are not unit length).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .checkpoint import PREFIX, _check_file
from .errors import CheckpointError, InputError
from .files import atomic_write

KIND = "attributes"


def save_directions(path: str | os.PathLike, directions: dict[str, np.ndarray], *, checkpoint: str, data: str,
                    method: str) -> Path:
    from safetensors.numpy import save_file

    if not directions:
        raise InputError("no attribute directions to write")
    dims = {v.shape for v in directions.values()}
    if len(dims) != 1:
        raise InputError(f"attribute directions must all have one width, got {sorted(dims)}")
    meta = {PREFIX + "kind": KIND, PREFIX + "latent_dim": str(dims.pop()[0]), PREFIX + "checkpoint": str(checkpoint),
            PREFIX + "data": str(data), PREFIX + "method": method}
    tensors = {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in directions.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_directions(path: str | os.PathLike, latent_dim: int | None = None) -> dict[str, np.ndarray]:
    """{name: float32 [latent_dim]} from a file `latentforge attributes` wrote; checks the width if given."""
    from safetensors.numpy import load_file
    from safetensors import safe_open

    path = Path(path)
    try:
        _check_file(path)
    except CheckpointError as e:
        raise CheckpointError(str(e).replace("checkpoint", "attributes file", 1)) from None
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        directions = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file ({e}); re-create it") from None
    if meta.get(PREFIX + "kind") != KIND:
        raise CheckpointError(f"{str(path)!r} is not an attributes file (latentforge.kind is "
                              f"{meta.get(PREFIX + 'kind')!r}); write one with `latentforge attributes`")
    for name, v in directions.items():
        if v.ndim != 1 or (latent_dim is not None and v.shape[0] != latent_dim):
            raise InputError(f"attribute {name!r} in {str(path)!r} has shape {list(v.shape)} but the model's latents "
                             f"are [{latent_dim}]; compute the directions with this model's checkpoint")
    return {name: v.astype(np.float32) for name, v in directions.items()}


def parse_amount(text: str) -> tuple[str, float]:
    """"eyes_open=+1.5" -> ("eyes_open", 1.5)."""
    name, sep, value = text.partition("=")
    try:
        amount = float(value)
    except ValueError:
        amount = float("nan")
    if not sep or not name.strip() or not np.isfinite(amount):
        raise InputError(f"--attr must look like NAME=AMOUNT with a finite number, e.g. eyes_open=+1.5; got {text!r}")
    return name.strip(), amount
