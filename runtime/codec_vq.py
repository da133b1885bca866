"""The VQ operating point: a VQ-VAE's code grid, range-coded (constriction) under its transformer prior.

The prior runs as a float64 twin of its key/value-cached step graph (models.prior.exact_step), on torch or as an onnxruntime graph; its logits become integer tables in
runtime/codec_probs.py, so a stream encoded on one backend decodes on the other. Positions are coded in
raster order, all images of a stream at once (one batched step a position), flag first, then the code.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from latentforge.errors import StreamError

from .codec_probs import (
    FLAG_PROBABILITIES,
    as_probabilities,
    frequencies,
    grid_logits,
    uniform,
)
from .vq_sampling import StepLogits


def codes_crc(codes: np.ndarray) -> int:
    return zlib.crc32(np.asarray(codes).astype("<i4").tobytes())


def _tables(logits: np.ndarray, flags: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(flags [N] int32, probabilities [N, K]) of one position; `flags` given: the decoder's, read from the
    stream, else the encoder's, from its own logits."""
    distance, unsafe = grid_logits(logits)
    flags = unsafe.astype(np.int32) if flags is None else flags
    freq = frequencies(distance)
    if flags.any():
        freq[flags == 1] = uniform(int(flags.sum()), freq.shape[1])
    return flags, as_probabilities(freq)


class VQPoint:
    """Codes [N, h, w] <-> range-coder words, under a prior step `run(token, position, cache) -> (logits, kv)`
    in float64 with cache shape `cache_shape` (less the batch)."""

    def __init__(self, make_run: Callable[[], Callable], cache_shape: tuple[int, ...], codebook_size: int,
                 grid: int) -> None:
        self.make_run, self.cache_shape, self.codebook_size, self.grid = make_run, cache_shape, codebook_size, grid

    def _steps(self):
        return StepLogits(self.make_run(), self.cache_shape, dtype=np.float64)

    def encode(self, codes: np.ndarray) -> np.ndarray:
        from constriction import stream

        model, queue = stream.model, stream.queue
        n = len(codes)
        flat = codes.reshape(n, -1).astype(np.int32)
        steps, family, encoder = self._steps(), model.Categorical(perfect=False), queue.RangeEncoder()
        flag_probabilities = np.tile(FLAG_PROBABILITIES, (n, 1))
        tokens = np.full((n, 1), self.codebook_size, dtype=np.int64)
        for t in range(flat.shape[1]):
            flags, probabilities = _tables(steps(tokens)[:, -1])
            encoder.encode(flags, family, flag_probabilities)
            encoder.encode(flat[:, t], family, probabilities)
            tokens = np.concatenate([tokens, flat[:, t:t + 1].astype(np.int64)], 1)
        return encoder.get_compressed()

    def decode(self, words: np.ndarray, n: int) -> np.ndarray:
        from constriction import stream

        model, queue = stream.model, stream.queue
        steps, family = self._steps(), model.Categorical(perfect=False)
        decoder = queue.RangeDecoder(np.ascontiguousarray(words, dtype=np.uint32))
        flag_probabilities = np.tile(FLAG_PROBABILITIES, (n, 1))
        tokens = np.full((n, 1), self.codebook_size, dtype=np.int64)
        for _ in range(self.grid * self.grid):
            logits = steps(tokens)[:, -1]
            try:
                flags = decoder.decode(family, flag_probabilities).astype(np.int32)
                _, probabilities = _tables(logits, flags)
                codes = decoder.decode(family, probabilities)
            except AssertionError as e:   # constriction's word for data its model cannot have written
                raise StreamError(f"the .lfz payload does not decode ({e}); the stream is corrupted") from None
            tokens = np.concatenate([tokens, codes[:, None].astype(np.int64)], 1)
        return tokens[:, 1:].reshape(n, self.grid, self.grid)
