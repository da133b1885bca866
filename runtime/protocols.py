"""What every backend graph, every decoder and every loaded model offers, written down once.

A caller asks a model what it is (`point_dim`, `codebook_size`) instead of probing it with
hasattr; tests/test_runtime.py checks that every graph, decoder and model class has each member.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class BackendGraph(Protocol):
    """An exported graph opened on one backend (OrtGraph, OvGraph, TrtGraph): onnxruntime's InferenceSession
    surface. `run(feeds, out=buf)` writes the first output into the caller's buffer and returns it first."""

    name: str                       # the backend: "onnxruntime", "openvino" or "tensorrt"
    threads: int
    precision: str                  # what runs, which may differ from what was asked (OpenVINO's bf16 hint)
    source: str | Path | bytes      # a path or the serialized graph, so a peer can open the same model
    input_names: list[str]
    output_names: list[str]

    @property
    def metadata(self) -> dict[str, str]: ...

    def run(self, feeds: dict[str, np.ndarray], out: np.ndarray | None = None) -> list[np.ndarray]: ...


@runtime_checkable
class Decoder(Protocol):
    """Latents float32 [N, D] -> float32 [N, C, H, W] (call) or uint8 [N, H, W, C] (`images`): a graph's
    (GraphDecoder) or a checkpoint's module on torch (TorchDecoder, whose `source` is None)."""

    name: str
    threads: int
    precision: str
    source: str | Path | bytes | None

    def __call__(self, z: np.ndarray) -> np.ndarray: ...

    def images(self, z: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class LoadedModel(Protocol):
    """What `latentforge.load` returns, whichever family: latent-vector image models (Model), 2-D point models
    (Model with `point_dim` > 0: sample/decode give float32 [N, point_dim]) and VQ code-grid models (VQModel,
    `codebook_size` > 0: latents are code grids, so `latent_dim`, `decode`, `edit` and `filter_graph` say so
    in one InputError)."""

    path: Path
    kind: str                       # "vae", "dcgan", "wgan", "vqvae", "prior", ...
    backend: str
    threads: int
    precision: str
    chosen_because: str             # why `load` runs this backend: a tuning record, the default rule, the caller
    image_shape: tuple[int, int, int]   # (H, W, C)
    value_range: tuple[float, float]
    attributes: dict[str, np.ndarray]
    point_dim: int                  # > 0: a point model
    codebook_size: int              # > 0: a VQ model
    latent_dim: int
    has_encoder: bool
    nonfinite_recomputed: int       # calls the NaN guard recomputed at a higher precision (runtime/nan_guard.py)

    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0) -> np.ndarray: ...

    def decode(self, z) -> np.ndarray: ...

    def encode(self, images): ...

    def edit(self, images, amounts: dict[str, float], attributes: dict[str, np.ndarray] | None = None): ...

    def filter_graph(self) -> BackendGraph | None: ...
