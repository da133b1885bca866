"""The 2-D mode-collapse data sets of PacGAN and VEEGAN: `ring` and `grid`, mixtures of equal Gaussians.

ring: 8 Gaussians, means evenly spaced on the unit circle, std 0.01.
grid: 25 Gaussians, means at {-4, -2, 0, 2, 4}^2, std 0.05.

Like the faces, point i of a split is a pure function of (seed, split, i) (counter-based
uniforms, then Box-Muller), so a batch never depends on what was drawn before it and
resume stays exact. `get` returns float32 [B, 2]: the loop uses points as they are.
"""
from __future__ import annotations

import numpy as np

from latentforge.errors import DataError

from .splits import SPLITS, check_split, uniforms

TEST_SIZE = 2500   # the protocol's sample count


def ring_modes() -> np.ndarray:
    angles = 2 * np.pi * np.arange(8) / 8
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def grid_modes() -> np.ndarray:
    axis = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)


POINT_SETS = {"ring": (ring_modes, 0.01), "grid": (grid_modes, 0.05)}


class PointData:
    """A Gaussian mixture with `modes` [K, d] and one `std`; the interface of ImageData, points for images."""

    attribute_names: list[str] = []
    image_size = None   # not an image data set: --image-size does not apply

    def __init__(self, name: str, modes: np.ndarray, std: float, seed: int = 0) -> None:
        self.name = name
        self.modes = np.asarray(modes, dtype=np.float64)
        self.std = float(std)
        self.seed = int(seed)
        self.point_dim = self.modes.shape[1]

    @property
    def model_fields(self) -> dict:
        """The model config fields this data set fixes."""
        return {"point_dim": self.point_dim}

    def size(self, split: str) -> int:
        check_split(self.name, split)
        return 2**31 - 1 if split == "train" else TEST_SIZE

    def get(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 points [B, d] and an empty attribute array [B, 0]."""
        split = check_split(self.name, split)
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
            raise DataError(f"indices into {self.name!r} must be a 1-D integer array, got {indices.dtype} "
                            f"{list(indices.shape)}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.size(split)):
            raise DataError(f"indices into {self.name!r} {split} must be in 0 .. {self.size(split) - 1}")
        u = uniforms(self.seed, SPLITS.index(split), indices.astype(np.int64), 1 + 2 * self.point_dim)
        return self.points_from_uniform(u.astype(np.float64)), np.zeros((len(indices), 0), dtype=np.float32)

    def points_from_uniform(self, u: np.ndarray) -> np.ndarray:
        """[B, 1 + 2d] uniforms in [0, 1) -> points: the first picks the mode, pairs give Box-Muller normals."""
        d = self.point_dim
        mode = np.minimum((u[:, 0] * len(self.modes)).astype(np.int64), len(self.modes) - 1)
        radius = np.sqrt(-2.0 * np.log1p(-u[:, 1:1 + d]))        # 1 - u is in (0, 1]: log never sees 0
        normal = radius * np.cos(2 * np.pi * u[:, 1 + d:1 + 2 * d])
        return (self.modes[mode] + self.std * normal).astype(np.float32)


def open_points(name: str, seed: int = 0) -> PointData:
    make_modes, std = POINT_SETS[name]
    return PointData(name, make_modes(), std, seed)
