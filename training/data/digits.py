"""scikit-learn's digits, and stacked-digits: three of them stacked as the R, G and B channels; 1000 classes (modes).

stacked-digits is the image-level mode-collapse set of VEEGAN and PacGAN (Stacked MNIST), on
scikit-learn's bundled 8x8 digits upscaled, because MNIST cannot be downloaded here: comparable
in method, not in numbers. Image i of a split is a pure function of (seed, split, i): three digits
drawn from the digits' own train (or test) split, so test images never reuse a training digit.
Attribute "label" is 100 * red + 10 * green + blue.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .image_data import ArrayData, ImageData
from .splits import SPLITS, uniforms

DIGITS_TEST_SIZE = 297
STACKED_TEST_SIZE = 2000


def load_digits(image_size: int) -> ArrayData:
    """scikit-learn's 1797 8x8 digits (bundled, offline), upscaled; a fixed split of 1500 train, 297 test."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    small = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(d).resize((image_size, image_size), Image.Resampling.BILINEAR))
                       for d in small])[..., None]
    order = np.random.default_rng(0).permutation(len(images))   # fixed: the split never depends on `seed`
    return ArrayData("digits", images, digits.target[:, None], ["label"],
                     order[:-DIGITS_TEST_SIZE], order[-DIGITS_TEST_SIZE:])


class StackedDigits(ImageData):
    def __init__(self, image_size: int, seed: int) -> None:
        super().__init__("stacked-digits", image_size, 3, ["label"])
        self.seed = seed
        self.digits = load_digits(image_size)

    def _size(self, split: str) -> int:
        return 2**31 - 1 if split == "train" else STACKED_TEST_SIZE

    def _get(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pool = self.digits.size(split)
        picks = np.minimum((uniforms(self.seed, SPLITS.index(split), indices, 3) * pool).astype(np.int64), pool - 1)
        images, labels = self.digits.get(split, picks.ravel())
        images = images.reshape(len(indices), 3, self.image_size, self.image_size).transpose(0, 2, 3, 1)
        label = labels.reshape(len(indices), 3) @ np.array([100.0, 10.0, 1.0], dtype=np.float32)
        return np.ascontiguousarray(images), label[:, None].astype(np.float32)
