"""latentforge: VAEs and GANs as real-time image makers.

Importing this package never imports torch: an app that runs an exported `.onnx`
needs only numpy and onnxruntime. torch loads lazily for checkpoints and the
torch backend.
"""
from .errors import (
    BackendUnavailable,
    CheckpointError,
    DataError,
    ExportError,
    InputError,
    LatentforgeError,
    NumericalError,
    ParityError,
    StreamError,
    TrainingError,
)
from .latents import interpolate, latents

__version__ = "0.1.0"


def load(path, backend: str = "auto", **options):
    """Load a checkpoint (`.safetensors`) or an exported `.onnx` as a runnable model.

    See `latentforge.runtime.protocols.LoadedModel` for what every returned model offers.
    """
    from .runtime import load as _load

    return _load(path, backend=backend, **options)


def decompress(data, model):
    """The uint8 images [N, H, W, C] of a `.lfz` stream made by `model.compress(images)`, decoded by the same
    model (`latentforge.load` of the same prior checkpoint, on any backend)."""
    from .runtime.codec import decompress as _decompress

    return _decompress(data, model)


def backends():
    """Every runtime backend as (name, available, reason), e.g. tensorrt: not installed — pip install ..."""
    from .runtime.backends import backends as _backends

    return _backends()


def __getattr__(name):
    if name == "Filter":  # imported on first use, like load's runtime
        from .runtime.filter import Filter

        return Filter
    if name == "MicroBatcher":
        from .runtime.batching import MicroBatcher

        return MicroBatcher
    raise AttributeError(f"module 'latentforge' has no attribute {name!r}")


__all__ = [
    "BackendUnavailable",
    "backends",
    "CheckpointError",
    "decompress",
    "DataError",
    "ExportError",
    "Filter",
    "InputError",
    "LatentforgeError",
    "MicroBatcher",
    "NumericalError",
    "ParityError",
    "StreamError",
    "TrainingError",
    "interpolate",
    "latents",
    "load",
    "__version__",
]
