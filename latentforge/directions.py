"""Attribute-direction files: named latent directions in one `.safetensors` file (NumPy only, no torch).

Tensors: one float32 [latent_dim] per attribute name. Metadata: `latentforge.kind` =
"attributes", `latentforge.latent_dim`, `latentforge.checkpoint` (what encoded the images),
`latentforge.data` and `latentforge.method`. Amount 1.0 along a direction moves a latent by
the full difference between the low and the high group (directions are not unit length; with
`attributes --independent`, as far along that difference and orthogonal to the other factors').

`load_directions` and `parse_attributes` (a model file's embedded `latentforge.attributes`) are the
one place directions are read and checked: by `latentforge edit`, the Filter and the runtime.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path

import numpy as np

from .checkpoint import PREFIX, check_safetensors_file
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


def load_directions(source, latent_dim: int | None = None) -> dict[str, np.ndarray]:
    """{name: float32 [latent_dim]} from an attributes file or a mapping {name: vector}; the width is checked if given.

    The file is one `latentforge attributes` wrote, or any .safetensors file of named vectors without
    latentforge metadata; a latentforge file of another kind (a checkpoint) is refused. A bad file or a
    direction of the wrong width is the caller's input (InputError).
    """
    if not isinstance(source, (str, os.PathLike)):
        return _checked(dict(source), latent_dim, "the directions given", InputError,
                        "use directions computed with this model's checkpoint")
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = Path(source)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise InputError(f"attributes file {str(path)!r} {state}; make one with `latentforge attributes`")
    try:
        check_safetensors_file(path)  # names a pickle or a truncated file before safetensors parses it
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        vectors = load_file(str(path))
    except Exception as e:  # the check's CheckpointError, or safetensors' own error types for a bad header
        raise InputError(f"attributes file {str(path)!r} is not a readable .safetensors file ({e}); "
                         "re-make it with `latentforge attributes`") from None
    kind = meta.get(PREFIX + "kind")
    if kind not in (None, KIND):
        raise CheckpointError(f"{str(path)!r} is not an attributes file (latentforge.kind is {kind!r}); "
                              "write one with `latentforge attributes`")
    return _checked(vectors, latent_dim, repr(str(path)), InputError,
                    "compute the directions with this model's checkpoint")


def parse_attributes(text: str, latent_dim: int, path: Path) -> dict[str, np.ndarray]:
    """A model file's `latentforge.attributes` (JSON {name: [floats]}) -> {name: float32 [latent_dim]}. Anything
    wrong with it is a damaged model file (CheckpointError)."""
    try:
        vectors = json.loads(text)
        if not isinstance(vectors, dict):
            raise TypeError(f"a JSON {type(vectors).__name__}, not an object of name: vector")
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{str(path)!r} has malformed latentforge.attributes ({e}); re-save it") from None
    return _checked(vectors, latent_dim, f"the latentforge.attributes of {str(path)!r}", CheckpointError, "re-save it")


def _checked(vectors: dict, latent_dim: int | None, where: str, error: type[Exception],
             fix: str) -> dict[str, np.ndarray]:
    """Every direction a float32 vector, of width `latent_dim` when given."""
    directions = {}
    for name, vector in vectors.items():
        try:
            v = np.asarray(vector, dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise error(f"attribute {name!r} in {where} is not a vector of numbers ({e}); {fix}") from None
        if v.ndim != 1 or (latent_dim is not None and v.shape[0] != latent_dim):
            width = f"this model's latents are [{latent_dim}]" if latent_dim is not None else "a direction is a vector"
            raise error(f"attribute {name!r} has shape {list(v.shape)}, but {width} ({where}); {fix}")
        if not np.isfinite(v).all():
            raise error(f"attribute {name!r} holds NaN or Inf ({where}); {fix}")
        directions[str(name)] = v
    return directions


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


def edit_offset(directions: dict[str, np.ndarray], edits: dict, latent_dim: int) -> np.ndarray:
    """{"eyes_open": 1.5, ...} -> sum(amount * direction), float32 [latent_dim]: the one check of edit amounts
    (an unknown name or a non-finite amount is an InputError), for the Filter and the server alike."""
    offset = np.zeros(latent_dim, np.float32)
    for name, amount in dict(edits).items():
        if name not in directions:
            known = ", ".join(sorted(directions)) or "none"
            raise InputError(f"unknown attribute {name!r}; this model has: {known} "
                             "(pass an attributes file made by `latentforge attributes` for others)")
        if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not math.isfinite(amount):
            raise InputError(f"edit amount for {name!r} must be a finite number, got {amount!r}")
        offset += np.float32(amount) * directions[name]
    return offset
