"""The VAE operating points: the encoder's mean latent, quantized with a uniform step, each dimension coded
(constriction) under its own fixed integer table, fitted on training latents (benchmarks/codec_fit.py).

The tables are integer constants shipped beside the VAE (`NAME.codec.safetensors`: `freq_q{Q}` int64
[D, 2R+1] per quality Q, the step in the metadata), so encoder and decoder use the same numbers on any
backend with nothing computed. The decoder gets the latents back exactly; the images are the VAE decoder's
output of them on the decoding backend.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from latentforge.errors import CheckpointError

from .codec_probs import PRECISION


def tables_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".codec.safetensors")


def read_tables(path: Path) -> dict[int, tuple[float, np.ndarray]]:
    """{quality: (step, frequencies int64 [D, 2R+1])} of a `.codec.safetensors` file, each row checked."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            steps = json.loads(f.metadata()["latentforge.codec_steps"])
            tables = {int(q): (float(steps[q]), f.get_tensor(f"freq_q{q}")) for q in steps}
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:   # unreadable, foreign, malformed
        raise CheckpointError(f"{str(path)!r} is not a latentforge codec table file ({e}); refit it with "
                              "benchmarks/codec_fit.py") from None
    for q, (step, freq) in tables.items():
        if not (step > 0 and freq.ndim == 2 and freq.shape[1] % 2 and (freq >= 1).all()
                and (freq.sum(1) == 1 << PRECISION).all()):
            raise CheckpointError(f"{str(path)!r}: table of quality {q} is malformed; refit it")
    return tables


def fit_table(latents: np.ndarray, step: float, radius: float = 4.0) -> np.ndarray:
    """Frequencies int64 [D, 2R+1] (R = ceil(radius / step)), each >= 1 and summing to 2**PRECISION, from a
    histogram of the quantized `latents` [N, D] with one pseudo-count a bin."""
    r = int(np.ceil(radius / step))
    q = np.clip(np.round(latents / step), -r, r).astype(np.int64) + r
    counts = np.stack([np.bincount(col, minlength=2 * r + 1) for col in q.T]).astype(np.float64) + 1
    spare = (1 << PRECISION) - counts.shape[1]
    freq = 1 + np.floor(counts / counts.sum(1, keepdims=True) * spare).astype(np.int64)
    freq[np.arange(len(freq)), counts.argmax(1)] += (1 << PRECISION) - freq.sum(1)
    return freq


class LatentPoint:
    """Quantized latents int [N, D] <-> range-coder words under the fixed tables `freq` [D, 2R+1]."""

    def __init__(self, step: float, freq: np.ndarray) -> None:
        self.step, self.radius = step, freq.shape[1] // 2
        self.probabilities = freq.astype(np.float64) / float(1 << PRECISION)   # exact: a power-of-two total

    def quantize(self, mu: np.ndarray) -> np.ndarray:
        return np.clip(np.round(mu / self.step), -self.radius, self.radius).astype(np.int64)

    def latents(self, symbols: np.ndarray) -> np.ndarray:
        return (symbols * self.step).astype(np.float32)

    def encode(self, symbols: np.ndarray) -> np.ndarray:
        from constriction import stream

        encoder = stream.queue.RangeEncoder()
        probabilities = np.tile(self.probabilities, (len(symbols), 1))
        encoder.encode((symbols + self.radius).reshape(-1).astype(np.int32), stream.model.Categorical(perfect=False),
                       probabilities)
        return encoder.get_compressed()

    def decode(self, words: np.ndarray, n: int) -> np.ndarray:
        from constriction import stream

        from latentforge.errors import StreamError

        decoder = stream.queue.RangeDecoder(np.ascontiguousarray(words, dtype=np.uint32))
        try:
            flat = decoder.decode(stream.model.Categorical(perfect=False), np.tile(self.probabilities, (n, 1)))
        except AssertionError as e:   # constriction's word for data its model cannot have written
            raise StreamError(f"the .lfz payload does not decode ({e}); the stream is corrupted") from None
        return flat.reshape(n, -1).astype(np.int64) - self.radius
