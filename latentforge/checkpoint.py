"""The checkpoint contract: one `.safetensors` file, weights as tensors, everything else in its metadata.

Metadata keys (all strings): `latentforge.kind`, `latentforge.config` (JSON),
`latentforge.value_range` (JSON [lo, hi]), `latentforge.data`, `latentforge.step`,
`latentforge.version`, and optionally `latentforge.command` (how it was trained) and
`latentforge.attributes` (JSON {name: [floats]}, latent directions, read by
latentforge.directions.parse_attributes). Training state
for resume lives in a second file beside it (`*.state.safetensors`). No pickle is
ever loaded.
"""
from __future__ import annotations

import json
import math
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CheckpointError
from .files import atomic_write

PREFIX = "latentforge."
MAX_HEADER = 100_000_000   # safetensors' own limit on the JSON header
REQUIRED = ("kind", "config", "value_range", "data", "step", "version")
ENCODING_KINDS = ("vae", "gan-encoder")   # checkpoints that encode images as well as decode latents


def _looks_like_pickle(head: bytes) -> bool:
    """A pickle starts with PROTO (0x80) and a protocol number 2..5; torch.save writes a zip archive."""
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head[:4] == b"PK\x03\x04"


@dataclass
class CheckpointInfo:
    path: Path
    kind: str
    config: dict
    value_range: tuple[float, float]
    data: str
    step: int
    version: str
    extra: dict[str, str] = field(default_factory=dict)


def check_value_range(value, finite: bool = True) -> tuple[float, float]:
    """(lo, hi) from a JSON [lo, hi]; a ValueError unless hi > lo, both finite when `finite` (an image model's
    pixels; a point model's range is [-inf, inf])."""
    lo, hi = (float(v) for v in value)
    if not hi > lo or (finite and not (math.isfinite(lo) and math.isfinite(hi))):
        raise ValueError(f"value_range [{lo}, {hi}] must have hi > lo{', both finite' if finite else ''}")
    return lo, hi


def state_path(path: str | os.PathLike) -> Path:
    """Where the resume state of checkpoint `path` lives."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".safetensors") + ".state.safetensors")


def _refuse_duplicates(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        twice = sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise ValueError(f"the names {twice[:3]} appear twice")
    return result


def _check_unique_names(path: Path, header_size: int) -> None:
    """safetensors keeps the last of two tensors (or metadata keys) of one name; which weights load is then
    an accident, so such a header is refused."""
    with open(path, "rb") as f:
        f.seek(8)
        header = f.read(header_size)
    try:
        json.loads(header, object_pairs_hook=_refuse_duplicates)
    except ValueError as e:  # also invalid JSON and bad UTF-8, which safetensors then names itself
        if "appear twice" in str(e):
            raise CheckpointError(f"{str(path)!r} is a damaged safetensors file: {e}; re-save it") from None


def check_safetensors_file(path: Path) -> None:
    """A CheckpointError unless `path` is a safetensors file: not missing, a folder, a pickle or truncated."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder; pass the .safetensors file inside it")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    # A safetensors file is an 8-byte little-endian header length, then the JSON header. Check that
    # first: a header length's low byte can be 0x80, the same byte a pickle starts with.
    header_size = struct.unpack("<Q", head[:8])[0] if len(head) == 9 else size
    if header_size + 8 <= size and header_size <= MAX_HEADER and head[8:9] == b"{":
        _check_unique_names(path, header_size)
        return
    if _looks_like_pickle(head):
        raise CheckpointError(f"{str(path)!r} is a pickle/torch.save file; latentforge never unpickles. "
                              "Save the weights with safetensors (safetensors.torch.save_file) instead")
    raise CheckpointError(f"{str(path)!r} is truncated or not a safetensors file ({size} bytes); "
                          "re-save or re-download it")


def read_info(path: str | os.PathLike) -> CheckpointInfo:
    """Read a checkpoint's metadata without importing torch."""
    from safetensors import safe_open

    path = Path(path)
    check_safetensors_file(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file ({e}); re-save it") from None
    missing = [k for k in REQUIRED if PREFIX + k not in meta]
    if missing:
        raise CheckpointError(f"{str(path)!r} is a safetensors file but not a latentforge checkpoint "
                              f"(metadata lacks {', '.join(PREFIX + k for k in missing)}); "
                              "train one with `latentforge train`")
    try:
        config = json.loads(meta[PREFIX + "config"])
        points = isinstance(config, dict) and bool(config.get("point_dim"))
        lo, hi = check_value_range(json.loads(meta[PREFIX + "value_range"]), finite=not points)
        info = CheckpointInfo(path=path, kind=meta[PREFIX + "kind"], config=config,
                              value_range=(float(lo), float(hi)), data=meta[PREFIX + "data"],
                              step=int(meta[PREFIX + "step"]), version=meta[PREFIX + "version"],
                              extra={k[len(PREFIX):]: v for k, v in meta.items()
                                     if k.startswith(PREFIX) and k[len(PREFIX):] not in REQUIRED})
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{str(path)!r} has malformed latentforge metadata ({e}); re-save it") from None
    return info


def save_checkpoint(path: str | os.PathLike, model, *, data: str, step: int, extra: dict[str, str] | None = None) -> Path:
    """Write `model`'s weights and metadata atomically. `model` has `.kind` and `.config`."""
    from safetensors.torch import save_file

    from . import __version__

    meta = {
        PREFIX + "kind": model.kind,
        PREFIX + "config": json.dumps(model.config.to_dict(), sort_keys=True),
        PREFIX + "value_range": json.dumps(list(model.config.value_range)),
        PREFIX + "data": str(data),
        PREFIX + "step": str(int(step)),
        PREFIX + "version": __version__,
    }
    meta.update({PREFIX + k: str(v) for k, v in (extra or {}).items()})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def check_finite(tensors: dict, path: Path) -> None:
    """Refuse weights holding NaN or Inf: a diverged run or a damaged file, whose images would be garbage."""
    import torch

    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{str(path)!r}: tensor {name!r} holds NaN or Inf; the run diverged or the file is "
                                  "damaged, so resume from or load an earlier checkpoint")


def load_checkpoint(path: str | os.PathLike, device: str = "cpu"):
    """Build the model a checkpoint describes and load its weights. Returns (model in eval mode, info)."""
    import torch
    from safetensors.torch import load_file

    from latentforge.models import build_model

    info = read_info(path)
    try:
        tensors = load_file(str(info.path), device=device)
        with torch.device("meta"):  # the config's shapes, checked against the file's before allocating any
            expected = {k: tuple(v.shape) for k, v in build_model(info.kind, info.config).state_dict().items()}
        mismatch = [(k, list(expected.get(k, ())), list(tensors[k].shape) if k in tensors else None)
                    for k in sorted(set(expected) | set(tensors))
                    if k not in tensors or k not in expected or tuple(tensors[k].shape) != expected[k]]
        if mismatch:
            name, want, have = mismatch[0]
            raise ValueError(f"{len(mismatch)} tensor(s) differ, first {name!r}: config says {want}, file has {have}")
        model = build_model(info.kind, info.config)
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
        # a config its dataclass or model cannot take, or weights that do not fit it (SafetensorError is a
        # RuntimeError)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{str(info.path)!r}: weights do not match its {info.kind} config ({first}); "
                              "the file is damaged or was edited") from None
    check_finite(tensors, info.path)
    if hasattr(model, "check_weights"):   # a model whose parts must agree (models/gan_encoder.py)
        model.check_weights(info.path)
    return model.to(device).eval(), info
