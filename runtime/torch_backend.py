"""The torch backend: a checkpoint's own nn.Module, in eval mode under inference_mode.

Imported only for checkpoints, so running an `.onnx` never loads torch.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

NAME = "torch"


@contextmanager
def thread_count(threads: int | None):
    """Use `threads` intra-op threads inside the block and restore the caller's count after it,
    so one model's setting never leaks into another (or into a benchmark's default-threads peer)."""
    if threads is None or threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _tensor(x: np.ndarray) -> torch.Tensor:
    """Share the array's memory; copy only a read-only one, which torch.from_numpy would warn about."""
    return torch.from_numpy(x if x.flags.writeable else x.copy())


class TorchDecoder:
    """z float32 [N, D] -> image float32 [N, C, H, W]; also the VAE encoder, which only a checkpoint has."""

    name = NAME

    def __init__(self, model: torch.nn.Module, threads: int | None = None) -> None:
        # channels_last runs the transposed convolutions on oneDNN's NHWC kernels: measured 1.3-1.5x faster than
        # NCHW for the 64px VAE at batch 1..128 on this 2-core CPU. Converts `model` in place: it is ours now.
        self.module = model.eval().to(memory_format=torch.channels_last)
        self.threads = threads or torch.get_num_threads()
        self._threads = threads

    def __call__(self, z: np.ndarray) -> np.ndarray:
        with thread_count(self._threads), torch.inference_mode():
            image = self.module.decode(_tensor(z))
            return image.contiguous().numpy()

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x float32 [N, C, H, W] in the value range -> (mu, logvar) float32 [N, D]."""
        with thread_count(self._threads), torch.inference_mode():
            mu, logvar = self.module.encode(_tensor(x))
            return mu.contiguous().numpy(), logvar.contiguous().numpy()


def checkpoint_to_onnx_bytes(model: torch.nn.Module, info) -> bytes:
    """Export a checkpoint's decoder in memory, with the metadata and the parity check `latentforge export` has."""
    from latentforge.errors import ParityError
    from latentforge.export.onnx import check_parity, metadata, to_onnx_bytes

    data = to_onnx_bytes(model, info.config["latent_dim"], metadata(info))
    failed = [p for p in check_parity(model, data, info.config["latent_dim"], info.value_range, atol=1e-4, rtol=1e-3)
              if not p.passed]
    if failed:
        raise ParityError(f"the in-memory ONNX graph of {str(info.path)!r} disagrees with PyTorch: "
                          + "; ".join(p.line() for p in failed) + "; use backend='torch'")
    return data
