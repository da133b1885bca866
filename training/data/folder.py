"""A folder of png/jpg images, with an optional CelebA-style labels CSV, as an in-memory data set."""
from __future__ import annotations

import csv
import math
import os

import numpy as np
from PIL import Image

from latentforge.errors import DataError
from latentforge.images import read_rgb

from .image_data import ArrayData

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def load_folder(folder: str, image_size: int, labels: str | None = None) -> ArrayData:
    """Every png/jpg under `folder` (recursive, sorted), or the ones a labels CSV names; loaded now.

    Each image is converted to RGB, centre-cropped to a square and resized. The split is
    fixed: every 10th image in sorted order (i % 10 == 9) is test. With fewer than 10
    images the last one is test; a folder of one image uses it for both train and test.
    """
    if labels is None:
        files, attribute_names, attributes = find_images(folder), [], None
        if not files:
            raise DataError(f"no png/jpg images found in {folder} (searched recursively): "
                            f"point at a folder of .png/.jpg/.jpeg files")
    else:
        files, attribute_names, attributes = _read_labels(labels, folder)
    images = np.stack([load_image(os.path.join(folder, f), image_size) for f in files])
    n = len(files)
    test = np.arange(9, n, 10) if n >= 10 else np.array([n - 1])
    train = np.setdiff1d(np.arange(n), test) if n > 1 else test
    if attributes is None:
        attributes = np.zeros((n, 0), dtype=np.float32)
    return ArrayData(folder, images, attributes, attribute_names, train, test)


def find_images(folder: str) -> list[str]:
    """The png/jpg files under `folder` (recursive), as sorted paths relative to it."""
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, name), folder)
                  for name in names if name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def load_image(path: str, image_size: int) -> np.ndarray:
    """An image file as uint8 RGB [image_size, image_size, 3]: centre-cropped to a square, then resized."""
    image = read_rgb(path, draft=image_size)   # JPEGs decode at a reduced scale: much faster
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
    except (OSError, UnicodeDecodeError, csv.Error) as e:   # csv.Error: a NUL byte, a field over csv's size limit
        raise DataError(f"cannot read labels file {labels}: {e}; save it as a UTF-8 CSV") from None
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
                raise DataError(f"labels file {labels}, line {line} ({filename!r}): column {name!r} has "
                                f"{value!r}, not a number; attributes must be numbers such as -1/1")
            values.append(number)
        if filename in entries:
            raise DataError(f"labels file {labels}, line {line}: {filename!r} is listed twice; keep one row")
        entries[filename] = values
    if not entries:
        raise DataError(f"labels file {labels} names no images: add rows filename,<values>")
    files = sorted(entries)
    root = os.path.realpath(folder)
    outside = [f for f in files   # a NUL first: realpath cannot take one
               if "\x00" in f or os.path.commonpath([root, os.path.realpath(os.path.join(folder, f))]) != root]
    if outside:
        raise DataError(f"labels file {labels} names {outside[0]!r}, which is not a file inside {folder} (outside "
                        "it, or a NUL byte): filenames are relative to the folder and stay inside it; fix the row")
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(f"labels file {labels} names {len(missing)} image(s) missing from {folder}, "
                        f"first {missing[0]!r}: filenames are relative to the folder; fix or drop those rows")
    values = np.array([entries[f] for f in files], dtype=np.float32).reshape(len(files), len(attribute_names))
    return files, attribute_names, values
