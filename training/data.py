"""One interface for every data set: procedural faces, scikit-learn's digits, or a folder of images.

NumPy and Pillow only (scikit-learn for the digits): training turns batches into tensors itself.
Images are uint8 [B, H, W, C], attributes float32 [B, len(attribute_names)]; every data
set has a fixed "train" and "test" split, so a held-out score means the same thing each run.
"""
from __future__ import annotations

import csv
import math
import os

import numpy as np
from PIL import Image

from latentforge.errors import DataError

from .faces import FACTORS, factors_from_uniform, render_faces

IMAGE_SIZES = (32, 64, 128)
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

FACES_TEST_SIZE = 2000
DIGITS_TEST_SIZE = 297


class ImageData:
    """A data set: `get(split, indices)` -> (uint8 images [B, H, W, C], float32 attributes [B, A])."""

    def __init__(self, name: str, image_size: int, channels: int, attribute_names: list[str]):
        self.name = name
        self.image_size = image_size
        self.channels = channels
        self.attribute_names = attribute_names

    def size(self, split: str) -> int:
        return self._size(self._check_split(split))

    def get(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        split = self._check_split(split)
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

    def _check_split(self, split: str) -> str:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r} of {self.name!r}: use 'train' or 'test'")
        return split

    def _size(self, split: str) -> int:
        raise NotImplementedError

    def _get(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class FacesData(ImageData):
    """Cartoon faces, rendered on demand: image i of a split is a pure function of (seed, split, i).

    The train split is effectively unlimited (2**31 - 1 images, never repeated in practice);
    the test split is 2000 images from a different stream, so it is held out.
    """

    def __init__(self, image_size: int, seed: int):
        super().__init__("faces", image_size, 3, list(FACTORS))
        self.seed = seed

    def _size(self, split: str) -> int:
        return 2**31 - 1 if split == "train" else FACES_TEST_SIZE

    def _get(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        factors = factors_from_uniform(_uniforms(self.seed, SPLITS.index(split), indices, len(FACTORS)))
        return render_faces(factors, self.image_size), factors


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijection on uint64 that turns a counter into well-mixed bits."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniforms(seed: int, split_id: int, indices: np.ndarray, k: int) -> np.ndarray:
    """k float32 uniforms in [0, 1) per index, keyed by (seed, split, index) alone.

    Counter-based, so any batch that asks for index i gets the same numbers; measured
    ~40x cheaper than a PCG64 generator per index (0.03 vs 1.2 ms for 64 indices).
    """
    stream = _splitmix64(np.array([seed * len(SPLITS) + split_id], dtype=np.uint64))
    per_index = _splitmix64(stream ^ indices.astype(np.uint64))
    golden = np.uint64(0x9E3779B97F4A7C15)
    bits = _splitmix64(per_index[:, None] + golden * np.arange(1, k + 1, dtype=np.uint64))
    return (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


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


def load_folder(folder: str, image_size: int, labels: str | None = None) -> ArrayData:
    """Every png/jpg under `folder` (recursive, sorted), or the ones a labels CSV names; loaded now.

    Each image is converted to RGB, centre-cropped to a square and resized. The split is
    fixed: every 10th image in sorted order (i % 10 == 9) is test. With fewer than 10
    images the last one is test; a folder of one image uses it for both train and test.
    """
    if labels is None:
        files, attribute_names, attributes = _find_images(folder), [], None
        if not files:
            raise DataError(f"no png/jpg images found in {folder} (searched recursively): "
                            f"point at a folder of .png/.jpg/.jpeg files")
    else:
        files, attribute_names, attributes = _read_labels(labels, folder)
    images = np.stack([_load_image(os.path.join(folder, f), image_size) for f in files])
    n = len(files)
    test = np.arange(9, n, 10) if n >= 10 else np.array([n - 1])
    train = np.setdiff1d(np.arange(n), test) if n > 1 else test
    if attributes is None:
        attributes = np.zeros((n, 0), dtype=np.float32)
    return ArrayData(folder, images, attributes, attribute_names, train, test)


def _find_images(folder: str) -> list[str]:
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, name), folder)
                  for name in names if name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _load_image(path: str, image_size: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.draft("RGB", (image_size, image_size))   # JPEGs decode at a reduced scale: much faster
            image = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}; replace or remove the file") from None
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))   # crop first: resize(box=) blends in the edges
    return np.asarray(square.resize((image_size, image_size), Image.Resampling.BICUBIC), dtype=np.uint8)


def _read_labels(labels: str, folder: str) -> tuple[list[str], list[str], np.ndarray]:
    """A CelebA-style CSV, `filename,<attr1>,...`: the images it names (sorted), its columns and values."""
    try:
        with open(labels, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read labels file {labels}: {e}") from None
    header = [name.strip() for name in rows[0]] if rows else []
    if "filename" not in header:
        raise DataError(f"labels file {labels} has no 'filename' column: its header must be "
                        f"filename,<attribute>,<attribute>,...")
    file_column = header.index("filename")
    attribute_names = [name for name in header if name != "filename"]
    entries = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"labels file {labels}, line {line}: {len(row)} values for {len(header)} columns")
        filename = row[file_column].strip()
        values = []
        for name, value in zip(header, row):
            if name == "filename":
                continue
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise DataError(f"labels file {labels}, line {line} ({filename}): column {name!r} has "
                                f"{value!r}, not a number; attributes must be numbers such as -1/1")
            values.append(number)
        if filename in entries:
            raise DataError(f"labels file {labels}, line {line}: {filename} is listed twice; keep one row")
        entries[filename] = values
    if not entries:
        raise DataError(f"labels file {labels} names no images: add rows filename,<values>")
    files = sorted(entries)
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(f"labels file {labels} names {len(missing)} image(s) missing from {folder}, "
                        f"first {missing[0]}: filenames are relative to the folder; fix or drop those rows")
    values = np.array([entries[f] for f in files], dtype=np.float32).reshape(len(files), len(attribute_names))
    return files, attribute_names, values


POINT_NAMES = ("ring", "grid")                     # 2-D point data: training/points.py
BUILT_IN = ("faces", "digits", "stacked-digits") + POINT_NAMES


def data_fields(spec, image_size: int | None) -> dict:
    """The model config fields data set `spec` will fix, known without loading it (for early checks)."""
    if spec in POINT_NAMES:
        return {"point_dim": 2}
    return {"image_size": image_size or 32 if spec in ("digits", "stacked-digits") else image_size or 64,
            "channels": 1 if spec == "digits" else 3}


def open_data(spec: str | os.PathLike, image_size: int | None = None, labels: str | None = None,
              seed: int = 0):
    """A data set by name: "faces", "digits", "stacked-digits", "ring", "grid", or a folder of png/jpg images
    (with an optional labels CSV). ring and grid are 2-D points (training/points.py), the rest ImageData.

    image_size None means the data set's own: 64 for faces and folders, 32 for digits. `seed`
    picks the faces streams; digits and folders have fixed splits that ignore it. The names
    built-in names win over a folder of that name: pass "./faces" for the folder.
    """
    spec = os.fspath(spec)
    if image_size is not None and image_size not in IMAGE_SIZES:
        raise DataError(f"image_size {image_size!r} is not supported: use 32, 64 or 128")
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**62:
        raise DataError(f"seed {seed!r} must be an integer in 0 .. 2**62 - 1")
    if spec in BUILT_IN and labels is not None:
        raise DataError(f"labels {labels} given for {spec!r}, which has its own attributes: "
                        f"labels apply only to a folder of images")
    if spec == "faces":
        return FacesData(image_size or 64, int(seed))
    if spec == "digits":
        return load_digits(image_size or 32)
    if spec == "stacked-digits":
        from .stacked import load_stacked_digits

        return load_stacked_digits(image_size or 32, int(seed))
    if spec in POINT_NAMES:
        if image_size is not None:
            raise DataError(f"image_size {image_size} given for {spec!r}, which is 2-D point data: leave it out")
        from .points import open_points

        return open_points(spec, int(seed))
    if os.path.isdir(spec):
        return load_folder(spec, image_size or 64, labels)
    raise DataError(f"unknown data set {spec!r}: use {', '.join(BUILT_IN)} or a folder of png/jpg images")
