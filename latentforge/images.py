"""Images at the edges: uint8 NHWC. Conversions to/from the model's float NCHW value range, and grids.

NumPy and Pillow only, so the runtime can use it without torch.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from .errors import DataError, InputError
from .files import atomic_write

MAX_PIXELS = 50_000_000   # a 7071 x 7071 image; larger ones are refused before decoding (a decompression bomb)
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")   # 16-bit greyscale (Pillow opens some as 32-bit "I")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# What a damaged file makes Pillow raise, by decoder: OSError (truncated), SyntaxError (broken PNG), ValueError,
# EOFError, and the struct/zlib errors of a header that lies about its lengths.
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError, ArithmeticError,
                 MemoryError)


def read_rgb(path: str | os.PathLike, formats: tuple[str, ...] = ("PNG", "JPEG"), draft: int | None = None):
    """An image file as a Pillow RGB image, or a DataError in one line.

    Only `formats` are opened (by content, whatever the name says). Above MAX_PIXELS it is refused before
    its pixels are decoded. 16-bit greyscale is scaled to 8 bits (65535 -> 255), transparent pixels are
    composited over white, palette, greyscale and CMYK go through Pillow's conversion. `draft` lets a JPEG
    decode at a reduced scale no smaller than draft x draft.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=list(formats)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise DataError(f"image {str(path)!r} is {image.width} x {image.height} pixels, over the limit "
                                    f"of {MAX_PIXELS} (latentforge.images.MAX_PIXELS); resize it first")
                if draft:
                    image.draft("RGB", (draft, draft))
                return to_rgb(image)
    except DataError:
        raise
    except (*PILLOW_ERRORS, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise DataError(f"cannot read image {str(path)!r} as {'/'.join(formats)} ({reason}); replace or remove "
                        "the file") from None


def to_rgb(image):
    """A Pillow image as RGB, converted as a viewer shows it (see read_rgb); also the server's uploads."""
    from PIL import Image

    if image.mode in DEEP_MODES:
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def to_uint8(x: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Float [N, C, H, W] in `value_range` -> uint8 [N, H, W, C], rounded to nearest, clamped; NaN -> 0."""
    lo, hi = value_range
    y = (np.asarray(x, dtype=np.float32) - lo) * (255.0 / (hi - lo))
    y = np.nan_to_num(y, nan=0.0, posinf=255.0, neginf=0.0)
    y = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1))


def from_uint8(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """uint8 [N, H, W, C] -> float32 [N, C, H, W] in `value_range`."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InputError(f"images must be uint8 [N, H, W, C], got {images.dtype} {list(images.shape)}")
    lo, hi = value_range
    x = images.astype(np.float32).transpose(0, 3, 1, 2) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    return np.ascontiguousarray(x)


def grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 [N, H, W, C] into one uint8 [H', W', C] image, `nrow` images per row."""
    n, h, w, c = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = images[i]
    return out


def png_writer(image: np.ndarray, scale: int = 1):
    """A function writing uint8 [H, W, C] (C = 1 or 3) as a PNG to the path it is given (for files.atomic_write);
    `scale` enlarges with nearest neighbour."""
    from PIL import Image

    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    pil = Image.fromarray(image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return lambda tmp: pil.save(tmp, format="PNG")


def save_png(image: np.ndarray, path: str | os.PathLike, scale: int = 1) -> None:
    """Write uint8 [H, W, C] (C = 1 or 3) as a PNG, atomically; `scale` enlarges with nearest neighbour."""
    atomic_write(path, png_writer(image, scale))


def save_grid(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None, scale: int = 1) -> None:
    save_png(grid(images, nrow), path, scale=scale)
