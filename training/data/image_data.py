"""The image data set interface, and the in-memory data set that digits and image folders are.

Images are uint8 [B, H, W, C], attributes float32 [B, len(attribute_names)]; every data set has
a fixed "train" and "test" split, so a held-out score means the same thing each run.
"""
from __future__ import annotations

import numpy as np

from latentforge.errors import DataError

from .splits import check_split


class ImageData:
    """A data set: `get(split, indices)` -> (uint8 images [B, H, W, C], float32 attributes [B, A])."""

    def __init__(self, name: str, image_size: int, channels: int, attribute_names: list[str]):
        self.name = name
        self.image_size = image_size
        self.channels = channels
        self.attribute_names = attribute_names

    def size(self, split: str) -> int:
        return self._size(check_split(self.name, split))

    def get(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        split = check_split(self.name, split)
        indices = np.asarray(indices)
        if indices.size == 0:
            indices = indices.astype(np.int64)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise DataError(f"indices into {self.name!r} must be a 1-D integer array, "
                            f"got {indices.dtype} {list(indices.shape)}")
        n = self._size(split)
        out_of_range = indices[(indices < 0) | (indices >= n)]
        if out_of_range.size:
            raise DataError(f"index {int(out_of_range[0])} is out of range for {self.name!r} {split}: "
                            f"use 0 .. {n - 1}")
        return self._get(split, indices.astype(np.int64))

    def _size(self, split: str) -> int:
        raise NotImplementedError

    def _get(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class ArrayData(ImageData):
    """A data set held in memory, with fixed train and test index lists into its images."""

    def __init__(self, name: str, images: np.ndarray, attributes: np.ndarray, attribute_names: list[str],
                 train: np.ndarray, test: np.ndarray):
        super().__init__(name, images.shape[1], images.shape[3], attribute_names)
        self._images = images
        self._attributes = attributes.astype(np.float32)
        self._splits = {"train": np.asarray(train, dtype=np.int64), "test": np.asarray(test, dtype=np.int64)}

    def _size(self, split: str) -> int:
        return len(self._splits[split])

    def _get(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self._splits[split][indices]
        return self._images[rows], self._attributes[rows]
