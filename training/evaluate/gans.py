"""`latentforge evaluate` for the GAN kinds: the mode-collapse protocol and feature distances.

ring / grid: the VEEGAN / PacGAN protocol, 2500 samples (modes captured, % high quality,
reverse KL). stacked-digits: modes out of 1000 and KL to uniform, read by the project's digit
classifier (default 10000 samples), plus FD and precision/recall. Other image data sets:
FD (domain features) and precision/recall on the test split.
"""
from __future__ import annotations

import numpy as np

from latentforge.checkpoint import load_checkpoint
from latentforge.errors import InputError

from ..data import open_data
from ..samples import generate
from .features import feature_net, features, frechet_distance, precision_recall
from .modes import class_mode_stats, point_mode_stats

POINT_SAMPLES = 2500
STACKED_SAMPLES = 10000


def _count(options: dict, default: int) -> int:
    n = options.get("n", default)
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    return n


def evaluate_gan(path, info, options: dict) -> dict:
    model, _ = load_checkpoint(path)
    seed = options.get("seed", 0)
    if model.config.point_dim:
        data = open_data(info.data)
        n = _count(options, POINT_SAMPLES)
        stats = point_mode_stats(generate(model, n, seed), data.modes, data.std)
        kl = stats["reverse_kl"]
        return {**stats, "samples": n, "seed": seed, "protocol": "VEEGAN/PacGAN 2-D",
                "table": [("modes captured", f"{stats['modes']}/{stats['total_modes']}", ""),
                          ("high-quality samples", stats["hq_percent"], "%"),
                          ("reverse KL to uniform", "n/a (no HQ samples)" if kl is None else kl, "nats"),
                          ("samples", n, "")]}
    result: dict = {"seed": seed, "table": []}
    if info.data == "stacked-digits":
        from .digit_classifier import stacked_labels

        n = _count(options, STACKED_SAMPLES)
        stats = class_mode_stats(stacked_labels(generate(model, n, seed)), 1000)
        result.update(stats, samples=n, protocol="stacked digits (sklearn 8x8 digits, not MNIST)")
        result["table"] += [("modes captured", f"{stats['modes']}/1000", ""),
                            ("KL(class histogram || uniform)", stats["reverse_kl"], "nats"), ("samples", n, "")]
    result.update(_feature_scores(model, info, options, seed))
    result["table"] += [("FD (domain features)", result["fd"], ""), ("precision", result["precision"], ""),
                        ("recall", result["recall"], ""), ("real / fake images", result["images"], "")]
    return result


def _feature_scores(model, info, options: dict, seed: int) -> dict:
    config = model.config
    data = open_data(info.data, image_size=config.image_size)
    net, described = feature_net(info.data, config.channels, config.image_size)
    count = min(data.size("test"), options.get("n", data.size("test")))
    images, _ = data.get("test", np.arange(count))
    real = images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    fake = generate(model, count, seed)
    precision, recall = precision_recall(features(net, real), features(net, fake))
    return {"fd": frechet_distance(net, real, fake), "precision": precision, "recall": recall,
            "images": count, "features": described}
