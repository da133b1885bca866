"""Bytes at the server's edges: uploaded images and .npy latents in, PNG/JPEG/.npy out.

An upload's size is read from its header and refused before any pixel is decoded, so a decompression
bomb (a small file that inflates to gigabytes) costs nothing. `.npy` is read with allow_pickle=False.
"""
from __future__ import annotations

import io
import warnings

import numpy as np

from latentforge.errors import InputError
from latentforge.images import to_rgb

FORMATS = ("PNG", "JPEG")
NPY = "application/x-npy"


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """PNG or JPEG bytes -> uint8 [H, W, 3]."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))   # no other plug-in parses the bytes
            w, h = image.size
            if w * h > max_pixels:
                raise InputError(f"image is {w}x{h} = {w * h} pixels, over this server's limit of {max_pixels}; "
                                 "send a smaller image")
            return np.asarray(to_rgb(image))   # 16-bit scaled, transparency over white: as files are read
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"image is over this server's limit of {max_pixels} pixels; send a smaller image") from None
    except Exception as e:  # Pillow reports truncated or corrupt files with several exception types
        raise InputError(f"image could not be decoded ({type(e).__name__}); send a valid PNG or JPEG") from None


def encode_image(image: np.ndarray, fmt: str = "PNG", quality: int = 85) -> bytes:
    """uint8 [H, W, C] (C = 1 or 3) -> PNG or JPEG bytes."""
    from PIL import Image

    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buffer = io.BytesIO()
    # compress_level 1: a live page wants the bytes now; the file is a few percent larger than at level 6
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": quality} if fmt == "JPEG" else {"compress_level": 1}))
    return buffer.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:
        raise InputError("body is not a valid .npy array (pickled object arrays are refused); send float32 "
                         "[N, D] written by numpy.save") from None


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
