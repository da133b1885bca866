"""The project's own digit classifier: counts stacked-digits modes and gives the features for FD on digits.

A small CNN on scikit-learn's digits upscaled to 32 px (the `digits` data set), trained here
on its 1500-image train split with small random shifts, so GAN samples that sit a pixel off
still read. Input: float [N, 1, 32, 32] in [-1, 1] (the GANs' value range). The shipped
weights are latentforge/weights/digit_classifier.safetensors; retrain them with

    python -m latentforge.training.evaluate.digit_classifier

which prints the held-out accuracy (297 test digits) and stores it in the file's metadata.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from latentforge.errors import CheckpointError

from ..data.digits import load_digits

WEIGHTS_NAME = "digit_classifier.safetensors"
IMAGE_SIZE = 32


class DigitClassifier(nn.Module):
    num_features = 64   # torchmetrics' FrechetInceptionDistance reads this

    def __init__(self) -> None:
        super().__init__()
        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2)]
        self.body = nn.Sequential(*block(1, 16), *block(16, 32), *block(32, 64), nn.Flatten(),
                                  nn.Linear(64 * 4 * 4, self.num_features), nn.ReLU())
        self.head = nn.Linear(self.num_features, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, 32, 32] in [-1, 1] -> [N, 64], the penultimate layer."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def weights_path() -> Path:
    import latentforge

    return Path(latentforge.__file__).resolve().parent / "weights" / WEIGHTS_NAME


@functools.lru_cache(maxsize=1)
def load_classifier() -> DigitClassifier:
    from safetensors.torch import load_file

    path = weights_path()
    if not path.exists():
        raise CheckpointError(f"the digit classifier's weights {path} are missing; retrain them with "
                              "`python -m latentforge.training.evaluate.digit_classifier`")
    model = DigitClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


@torch.no_grad()
def predict(images: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """Digit labels of float [N, 1, 32, 32] images in [-1, 1]."""
    model = load_classifier()
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    return torch.cat([model(x[i:i + chunk]).argmax(1) for i in range(0, len(x), chunk)]).numpy()


def stacked_labels(images: np.ndarray) -> np.ndarray:
    """Class 0..999 of stacked-digits images, float [N, 3, 32, 32] in [-1, 1]: 100 * R + 10 * G + B digits."""
    images = np.asarray(images, dtype=np.float32)
    n = len(images)
    digits = predict(images.reshape(n * 3, 1, *images.shape[2:])).reshape(n, 3)
    return digits @ np.array([100, 10, 1])


def _shift(x: torch.Tensor, rng: np.random.Generator, most: int = 2) -> torch.Tensor:
    """Each image moved by up to `most` pixels in x and y, filled with the background (-1)."""
    out = torch.full_like(x, -1.0)
    size = x.shape[-1]
    for i, (dy, dx) in enumerate(rng.integers(-most, most + 1, size=(len(x), 2))):
        out[i, :, max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)] = \
            x[i, :, max(-dy, 0):size + min(-dy, 0), max(-dx, 0):size + min(-dx, 0)]
    return out


def train_classifier(epochs: int = 20, seed: int = 0) -> tuple[DigitClassifier, float]:
    """Train on the digits' train split; returns the model and its accuracy on the 297 test digits."""
    data = load_digits(IMAGE_SIZE)
    def tensors(split):
        images, labels = data.get(split, np.arange(data.size(split)))
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return x, torch.from_numpy(labels[:, 0]).long()
    (x, y), (xt, yt) = tensors("train"), tensors("test")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for i in range(0, len(x), 64):
            batch = order[i:i + 64]
            loss = nn.functional.cross_entropy(model(_shift(x[batch], rng)), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(xt).argmax(1) == yt).float().mean())
    return model, accuracy


def main() -> None:
    from safetensors.torch import save_file

    from latentforge.files import atomic_write

    torch.set_num_threads(1)
    model, accuracy = train_classifier()
    path = weights_path()
    meta = {"test_accuracy": f"{accuracy:.4f}", "test_set": "sklearn digits, fixed 297-image test split",
            "command": "python -m latentforge.training.evaluate.digit_classifier"}
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    print(f"wrote {path}: test accuracy {accuracy:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
