"""What a model file says about itself: kind, latent width, image shape, value range, attribute directions.

Read from a checkpoint's safetensors metadata or an exported `.onnx`'s metadata_props,
both without torch, so a `.onnx` app never pays for it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latentforge.checkpoint import PREFIX as META
from latentforge.checkpoint import CheckpointInfo, check_value_range
from latentforge.directions import parse_attributes
from latentforge.errors import CheckpointError

ONNX_SUFFIX = ".onnx"


@dataclass
class ArtifactInfo:
    path: Path
    format: str                            # "checkpoint" | "onnx"
    kind: str                              # "vae" | "dcgan"
    latent_dim: int
    image_shape: tuple[int, int, int]      # (H, W, C)
    value_range: tuple[float, float]
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    point_dim: int = 0                     # > 0: a point model (2-D GANs), float32 [N, point_dim] out, no image


def is_onnx(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ONNX_SUFFIX


def check_model_file(path: str | os.PathLike) -> Path:
    """The path as a Path, or a CheckpointError saying why it cannot be a model file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise CheckpointError(f"model path {str(path)!r} is a folder; pass the .safetensors or .onnx file inside it")
    return path


def from_checkpoint(info: CheckpointInfo) -> ArtifactInfo:
    cfg = info.config
    try:
        latent_dim = int(cfg["latent_dim"])
        shape = (int(cfg["image_size"]), int(cfg["image_size"]), int(cfg["channels"]))
        point_dim = int(cfg.get("point_dim", 0))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{str(info.path)!r}: config lacks a usable {e} entry; re-save it") from None
    return ArtifactInfo(info.path, "checkpoint", info.kind, latent_dim, shape, info.value_range,
                        parse_attributes(info.extra.get("attributes", "{}"), latent_dim, info.path),
                        point_dim=point_dim)


def image_shape_of(meta: dict[str, str]) -> tuple[int, int, int]:
    """(H, W, C) from metadata_props; graphs exported before `image_layout` was written carry (C, H, W)."""
    try:
        shape = tuple(int(v) for v in json.loads(meta[META + "image_shape"]))
    except OverflowError:   # JSON's 1e999 is float infinity
        raise ValueError(f"image_shape {meta[META + 'image_shape'][:40]!r} holds an infinite size") from None
    layout = meta.get(META + "image_layout", "CHW")
    if layout not in ("HWC", "CHW") or len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape {list(shape)[:4]} in layout {layout[:10]!r} is not three positive sizes, "
                         "HWC or CHW")
    if layout == "HWC":
        height, width, channels = shape
    else:
        channels, height, width = shape
    return height, width, channels


def from_onnx_metadata(meta: dict[str, str], path: Path) -> ArtifactInfo:
    """Parse the metadata_props that `latentforge export` writes; refuse a graph it did not write."""
    if META + "kind" not in meta:
        raise CheckpointError(f"{str(path)!r} is an ONNX model that latentforge did not export (no latentforge.kind "
                              "metadata); export a checkpoint with `latentforge export`")
    try:
        image_shape = image_shape_of(meta)
        lo, hi = check_value_range(json.loads(meta[META + "value_range"]))
        latent_dim = int(meta[META + "latent_dim"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{str(path)!r} has missing or malformed latentforge metadata ({e}); "
                              "re-export it with `latentforge export`") from None
    return ArtifactInfo(path, "onnx", meta[META + "kind"], latent_dim, image_shape, (lo, hi),
                        parse_attributes(meta.get(META + "attributes", "{}"), latent_dim, path))
