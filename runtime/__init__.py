"""latentforge.runtime: load a checkpoint or an exported `.onnx` and turn latents into images.

Importing this never imports torch; only a checkpoint or the torch backend does.
"""
from .backends import backends
from .batching import MicroBatcher
from .filter import Filter
from .loading import BACKENDS, load
from .model import Model

__all__ = ["BACKENDS", "Filter", "MicroBatcher", "Model", "backends", "load"]
