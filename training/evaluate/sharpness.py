"""Sharpness as high-frequency energy: how much of an image's detail survives, relative to real images.

For each uint8 image, the luma (ITU-R 601) minus its mean is Fourier transformed, and the energy at
radial frequencies above `cutoff` cycles per pixel (0.25: the upper half of the band up to Nyquist's 0.5)
is divided by the number of pixels. A blurry decoder (the VAE's "police sketch") loses this band; a
generator that draws edges keeps it. The ratio of two sets' means, e.g. filtered frames against the
real faces they came from, is the number reported: 1.0 is as sharp as the real images. Noise and
checkerboard artefacts also add high-frequency energy, so a ratio well above 1 is not better.
"""
from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
CUTOFF = 0.25


def high_frequency_energy(images: np.ndarray, cutoff: float = CUTOFF) -> np.ndarray:
    """Per-image energy above `cutoff` cycles/pixel of uint8 [N, H, W, C] images: float64 [N]."""
    x = np.asarray(images, np.float32)
    luma = x @ LUMA if x.shape[-1] == 3 else x[..., 0]
    luma = luma - luma.mean(axis=(1, 2), keepdims=True)
    h, w = luma.shape[1:]
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    power = np.abs(np.fft.fft2(luma.astype(np.float64))) ** 2 / (h * w)
    return (power * (radius > cutoff)).sum(axis=(1, 2)) / (h * w)


def sharpness_ratio(images: np.ndarray, reference: np.ndarray, cutoff: float = CUTOFF) -> float:
    """Mean high-frequency energy of `images` over that of `reference` (e.g. real faces): 1.0 = as sharp."""
    return float(high_frequency_energy(images, cutoff).mean() / high_frequency_energy(reference, cutoff).mean())
