"""One interface for every data set: procedural faces, scikit-learn's digits, stacked-digits, 2-D points,
or a folder of images. `open_data(name)` is the way in; each data set lives in its own module here.

NumPy and Pillow only (scikit-learn for the digits): training turns batches into tensors itself.
Images are uint8 [B, H, W, C], attributes float32 [B, len(attribute_names)]; every data
set has a fixed "train" and "test" split, so a held-out score means the same thing each run.
"""
from __future__ import annotations

import os

import numpy as np

from latentforge.errors import DataError

from .digits import StackedDigits, load_digits
from .faces import FacesData
from .folder import load_folder
from .points import POINT_SETS, open_points

IMAGE_SIZES = (32, 64, 128)
POINT_NAMES = tuple(POINT_SETS)                     # 2-D point data: points.py
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
    (with an optional labels CSV). ring and grid are 2-D points (PointData), the rest ImageData.

    image_size None means the data set's own: 64 for faces and folders, 32 for digits. `seed`
    picks the faces streams; digits and folders have fixed splits that ignore it. Built-in
    names win over a folder of that name: pass "./faces" for the folder.
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
        return StackedDigits(image_size or 32, int(seed))
    if spec in POINT_NAMES:
        if image_size is not None:
            raise DataError(f"image_size {image_size} given for {spec!r}, which is 2-D point data: leave it out")
        return open_points(spec, int(seed))
    if os.path.isdir(spec):
        return load_folder(spec, image_size or 64, labels)
    raise DataError(f"unknown data set {spec!r}: use {', '.join(BUILT_IN)} or a folder of png/jpg images")
