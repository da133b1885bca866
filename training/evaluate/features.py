"""Feature distances offline: FD (domain features) via torchmetrics and precision/recall (Kynkäänniemi et al. 2019).

Inception weights cannot be downloaded here, so the features come from networks this
project trained on the same domain: the digit classifier's penultimate layer for digits
(per channel, concatenated, for stacked-digits) and the shipped faces VAE's posterior mean
for faces. The number is "FD (domain features)", not FID.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from latentforge.errors import InputError

PR_NEIGHBOURS = 3   # k of the k-NN radii, as in Kynkäänniemi et al.


class DigitFeatures(nn.Module):
    """Images [N, C, 32, 32] in [-1, 1] -> the classifier's features of each channel, concatenated."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        from .digit_classifier import load_classifier

        self.classifier = load_classifier()
        self.num_features = self.classifier.num_features * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        return self.classifier.features(x.reshape(n * c, 1, *x.shape[2:]).float()).reshape(n, -1)


class FaceFeatures(nn.Module):
    """Images [N, 3, 64, 64] in [-1, 1] -> the shipped faces VAE's posterior means."""

    def __init__(self) -> None:
        super().__init__()
        from pathlib import Path

        import latentforge
        from latentforge.checkpoint import load_checkpoint

        self.vae, info = load_checkpoint(Path(latentforge.__file__).parent / "weights" / "faces_vae.safetensors")
        self.lo, self.hi = info.value_range
        self.num_features = self.vae.config.latent_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() + 1) / 2 * (self.hi - self.lo) + self.lo
        return self.vae.encode(x)[0]


def feature_net(data_name: str, channels: int, image_size: int) -> tuple[nn.Module, str]:
    """The feature network for a data set and a description of its features."""
    if data_name in ("digits", "stacked-digits") and image_size == 32:
        return DigitFeatures(channels).eval(), "the project's digit classifier, penultimate layer (64 per channel)"
    if data_name == "faces" and image_size == 64:
        return FaceFeatures().eval(), "the shipped faces VAE's posterior mean"
    raise InputError(f"no feature network for {data_name!r} at {image_size} px: FD and precision/recall use "
                     "digits/stacked-digits at 32 px or faces at 64 px")


@torch.no_grad()
def features(net: nn.Module, images: np.ndarray, chunk: int = 500) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    return torch.cat([net(x[i:i + chunk]) for i in range(0, len(x), chunk)]).double()


def frechet_distance(net: nn.Module, real: np.ndarray, fake: np.ndarray) -> float:
    """torchmetrics' Frechet distance with `net` as the feature extractor; images float [N, C, H, W]."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=net)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), 500):
            metric.update(torch.as_tensor(np.asarray(images[i:i + 500], dtype=np.float32)), real=is_real)
    return float(metric.compute())


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of x to its k-th nearest other row."""
    distance = torch.cdist(x, x)
    return distance.kthvalue(k + 1, dim=1).values   # the 1st smallest is the row itself, at 0


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    return (torch.cdist(points, centres) <= radii[None, :]).any(dim=1)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = PR_NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall: the fraction of fake features inside the real manifold (k-NN balls) and
    of real features inside the fake one."""
    if min(len(real), len(fake)) <= k:
        raise InputError(f"precision/recall need more than k={k} real and fake samples, got {len(real)}, {len(fake)}")
    precision = _covered(fake, real, _knn_radii(real, k)).double().mean().item()
    recall = _covered(real, fake, _knn_radii(fake, k)).double().mean().item()
    return precision, recall
