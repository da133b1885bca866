"""A small CNN trained on a data set's own labels: it reads factors back from pixels and gives domain features.

On `faces` it regresses the 9 generating factors (each scaled to [0, 1]); on `digits` it
classifies the 10 digits. Two uses: (1) measuring what a latent edit changed in the decoded
image, for every factor and not only eyes_open (which also has an exact pixel measure,
faces.measure_eyes_open); (2) the feature extractor of "FD (domain features)", the
Fréchet distance computed like FID but on these 64-d features, since Inception weights cannot
be downloaded here. Deterministic for a seed; trained in seconds.

For 64 px `faces` the readout is shipped (latentforge/weights/faces_readout.safetensors), so every
FD and every edit table is measured with the same features and `evaluate` does not retrain it;
remake it with `python -m latentforge.training.evaluate.readout`. Other data sets train their own.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentforge.errors import CheckpointError, InputError
from latentforge.images import from_uint8

from ..data import open_data

FEATURES = 64
SHIPPED = {("faces", 64): "faces_readout.safetensors"}   # (data name, image size) -> file in latentforge/weights
SHIPPED_STEPS = 3000   # the shipped one trains longer than a run's own (800): it is trained once


class ReadoutNet(nn.Module):
    def __init__(self, channels: int, outputs: int) -> None:
        super().__init__()
        # No global pooling: where a thing is (shift, the mouth's bend) is part of what it reads.
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(8), nn.Flatten(),
            nn.Linear(32 * 64, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Readout:
    """A trained ReadoutNet with the data set's label convention; inputs are uint8 NHWC images."""

    def __init__(self, net: ReadoutNet, data_name: str, low: np.ndarray, high: np.ndarray, classify: bool):
        self.net, self.data_name, self.low, self.high, self.classify = net.eval(), data_name, low, high, classify

    def _x(self, images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(from_uint8(images, (0.0, 1.0)))

    @torch.inference_mode()
    def features(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        return np.concatenate([self.net.features(self._x(images[i:i + batch])).numpy()
                               for i in range(0, len(images), batch)])

    @torch.inference_mode()
    def factors(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """Predicted factors in their own units [N, k] (faces) or class probabilities [N, 10] (digits)."""
        out = np.concatenate([self.net(self._x(images[i:i + batch])).numpy() for i in range(0, len(images), batch)])
        if self.classify:
            return torch.from_numpy(out).softmax(1).numpy()
        return self.low + out * (self.high - self.low)


def train_readout(data, steps: int = 800, batch: int = 64, seed: int = 0) -> tuple[Readout, dict]:
    """Train on data's train split; returns the readout and its held-out score (R² per factor, or accuracy)."""
    if not data.attribute_names:
        raise InputError(f"{data.name!r} has no labels to train a readout on")
    classify = data.name == "digits"
    sample_attrs = data.get("train", np.arange(min(4096, data.size("train"))))[1]
    low, high = sample_attrs.min(0), sample_attrs.max(0)
    span = np.where(high > low, high - low, 1.0).astype(np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ReadoutNet(data.channels, 10 if classify else len(data.attribute_names))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    rng = np.random.Generator(np.random.PCG64(seed))
    for _ in range(steps):
        images, attrs = data.get("train", rng.choice(data.size("train"), min(batch, data.size("train")), replace=False))
        out = net(torch.from_numpy(from_uint8(images, (0.0, 1.0))))
        if classify:
            loss = F.cross_entropy(out, torch.from_numpy(attrs[:, 0]).long())
        else:
            loss = F.mse_loss(out, torch.from_numpy((attrs - low) / span))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    readout = Readout(net, data.name, low, low + span, classify)
    images, attrs = data.get("test", np.arange(min(1000, data.size("test"))))
    pred = readout.factors(images)
    if classify:
        score = {"accuracy": float((pred.argmax(1) == attrs[:, 0]).mean())}
    else:
        residual = ((pred - attrs) ** 2).sum(0)
        total = ((attrs - attrs.mean(0)) ** 2).sum(0)
        score = {f"r2_{name}": float(1 - r / t) for name, r, t in zip(data.attribute_names, residual, total)}
    return readout, score


def _shipped_path(data):
    import latentforge

    name = SHIPPED.get((data.name, data.image_size))
    return None if name is None else Path(latentforge.__file__).resolve().parent / "weights" / name


def readout_for(data, steps: int | None = None) -> tuple[Readout, dict]:
    """The shipped readout for `data` where there is one (the same features in every run), else a trained one;
    `steps` trains a fresh one for that many steps instead."""
    path = _shipped_path(data)
    if steps:
        return train_readout(data, steps=steps)
    if path is None:
        return train_readout(data)
    if not path.exists():
        raise CheckpointError(f"the shipped readout {path} is missing; remake it with "
                              "`python -m latentforge.training.evaluate.readout`")
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata()
        with torch.random.fork_rng(devices=[]):   # building the net must not move the caller's random state
            net = ReadoutNet(data.channels, len(tensors["high"]) if meta["classify"] == "0" else 10)
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        readout = Readout(net, data.name, tensors["low"].numpy(), tensors["high"].numpy(), meta["classify"] == "1")
        return readout, json.loads(meta["score"])
    except Exception as e:   # safetensors, a missing key, a shape mismatch: all mean a damaged file
        raise CheckpointError(f"the shipped readout {path} is damaged ({type(e).__name__}: {str(e)[:120]}); remake it "
                              "with `python -m latentforge.training.evaluate.readout`") from None


def main() -> None:
    from safetensors.torch import save_file

    from latentforge.files import atomic_write

    torch.set_num_threads(1)
    for (name, size), _ in SHIPPED.items():
        data = open_data(name, size)
        readout, score = train_readout(data, steps=SHIPPED_STEPS)
        tensors = {f"net.{k}": v.contiguous() for k, v in readout.net.state_dict().items()}
        tensors |= {"low": torch.from_numpy(np.asarray(readout.low, np.float32)),
                    "high": torch.from_numpy(np.asarray(readout.high, np.float32))}
        meta = {"score": json.dumps(score), "classify": str(int(readout.classify)),
                "command": "python -m latentforge.training.evaluate.readout", "steps": str(SHIPPED_STEPS),
                "data": f"{name} {size} px, train split"}
        path = _shipped_path(data)
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
        print(f"wrote {path}: held-out {score}", file=sys.stderr)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, d] (FID's formula)."""
    from scipy import linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise InputError(f"FD needs at least 2 samples per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(A B) = sum of sqrt(eigenvalues of sqrt(A) B sqrt(A)), a symmetric PSD matrix: stable even when
    # dead ReLU features make the covariances singular, where sqrtm(A @ B) warns and loses accuracy.
    values, vectors = linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    trace_root = np.sqrt(np.clip(linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


if __name__ == "__main__":
    main()
