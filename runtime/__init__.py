"""latentforge.runtime: load a checkpoint or an exported `.onnx` and turn latents into images.

Importing this never imports torch; only a checkpoint or the torch backend does.
"""
from .model import BACKENDS, Model, load

__all__ = ["BACKENDS", "Model", "load"]
