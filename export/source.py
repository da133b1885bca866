"""What is exported: a model and the facts its graphs' metadata carry, from a checkpoint or a foreign module."""
from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from latentforge.checkpoint import CheckpointInfo, load_checkpoint
from latentforge.errors import ExportError

from .graph import metadata


@dataclass
class Source:
    """A model to export and the facts its metadata needs, whether from a checkpoint or a foreign module."""
    model: nn.Module                        # has decode(z) -> float [N, C, H, W]; VAEs also encode(x)
    kind: str
    latent_dim: int                         # 0 for VQ models: they decode a code grid
    image_shape: tuple[int, int, int]       # (H, W, C)
    value_range: tuple[float, float]
    data: str = "unknown"
    attributes: str | None = None           # JSON {name: [floats]} from the checkpoint, passed through
    info: CheckpointInfo | None = None      # the checkpoint's, for the VQ parts

    @property
    def peak(self) -> float:
        return self.value_range[1] - self.value_range[0]

    def metadata(self, part: str) -> dict[str, str]:
        """A latent-vector model's metadata_props, precision aside."""
        facts = {"latent_dim": str(int(self.latent_dim))}
        if self.attributes is not None:
            facts["attributes"] = self.attributes
        return metadata(self.kind, part, self.image_shape, self.value_range, self.data, **facts)


def source_of(model: nn.Module, info: CheckpointInfo) -> Source:
    """A loaded checkpoint as a Source; a 2-D point model is refused (it draws points, not images)."""
    cfg = info.config
    if cfg.get("point_dim"):
        raise ExportError(f"{str(info.path)!r} is a 2-D point model ({info.kind} on {info.data}); export writes "
                          "image generators only: sample it with `latentforge sample CKPT -o pts.npy`")
    shape_cfg = cfg.get("vqvae", cfg)  # a prior's image facts are its VQ-VAE's
    size = shape_cfg["image_size"]
    return Source(model, info.kind, cfg.get("latent_dim", 0), (size, size, shape_cfg["channels"]),
                  info.value_range, info.data, info.extra.get("attributes"), info)


def checkpoint_source(path: str | os.PathLike) -> Source:
    return source_of(*load_checkpoint(path))
