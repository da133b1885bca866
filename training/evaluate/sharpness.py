"""Sharpness: how much of an image set's energy is fine detail, as a ratio to real images of the same data.

The seed's complaint about the VAE is blur ("the police sketch"). Blur is a low-pass filter, so
both measures here drop when an image is blurred and are compared with real images, where
1.0 means "as sharp as the data":
- Laplacian energy: the mean squared response of the 3x3 Laplacian on luminance in [0, 1]
  (the variance-of-Laplacian focus measure, Pech-Pacheco et al. 2000, without the mean removal);
- high-frequency fraction: the share of an image's spectral power (mean removed) above
  `HIGH_FREQUENCY_RADIUS` of the Nyquist frequency, i.e. in detail finer than 4 pixels.
"""
from __future__ import annotations

import numpy as np

from latentforge.errors import InputError

HIGH_FREQUENCY_RADIUS = 0.5   # of Nyquist: wavelengths shorter than 4 pixels
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)   # ITU-R BT.601


def luminance(images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, 3] (or [N, H, W, 1]) -> float32 luminance [N, H, W] in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3) or min(images.shape[1:3]) < 3:
        raise InputError(f"sharpness needs uint8 images [N, H, W, 1 or 3] of at least 3x3 pixels, got "
                         f"{images.dtype} {list(images.shape)}")
    x = images.astype(np.float32) / 255.0
    return x[..., 0] if images.shape[3] == 1 else x @ _LUMA


def laplacian_energy(images: np.ndarray) -> np.ndarray:
    """Per image: the mean of the squared 4-neighbour Laplacian of its luminance (interior pixels)."""
    y = luminance(images)
    lap = 4 * y[:, 1:-1, 1:-1] - y[:, :-2, 1:-1] - y[:, 2:, 1:-1] - y[:, 1:-1, :-2] - y[:, 1:-1, 2:]
    return np.square(lap).mean(axis=(1, 2))


def high_frequency_fraction(images: np.ndarray, radius: float = HIGH_FREQUENCY_RADIUS) -> np.ndarray:
    """Per image: the fraction of its spectral power above `radius` x Nyquist; 0 for a flat image."""
    if not 0 < radius < np.sqrt(2):
        raise InputError(f"radius must be in (0, sqrt(2)) of the Nyquist frequency, got {radius!r}")
    y = luminance(images)
    y = y - y.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(y)) ** 2
    fy, fx = np.fft.fftfreq(y.shape[1]), np.fft.fftfreq(y.shape[2])   # cycles per pixel; Nyquist is 0.5
    high = np.hypot(fy[:, None], fx[None, :]) / 0.5 > radius
    total = power.sum(axis=(1, 2))
    flat = total <= 1e-12 * y[0].size     # only rounding left after removing the mean
    return np.divide(power[:, high].sum(axis=1), total, out=np.zeros_like(total), where=~flat)


def sharpness(images: np.ndarray, real: np.ndarray) -> dict:
    """Both measures of `images`, as means and as ratios to the same means over `real` images."""
    lap, real_lap = laplacian_energy(images).mean(), laplacian_energy(real).mean()
    hf, real_hf = high_frequency_fraction(images).mean(), high_frequency_fraction(real).mean()
    if real_lap <= 0 or real_hf <= 0:
        raise InputError("the real images are flat (no Laplacian energy or no high frequencies): sharpness "
                         "relative to them is undefined")
    return {"laplacian_energy": float(lap), "laplacian_ratio": float(lap / real_lap),
            "high_frequency_fraction": float(hf), "high_frequency_ratio": float(hf / real_hf)}
