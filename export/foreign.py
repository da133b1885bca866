"""A user's own generator as an export Source: `--module pkg.mod:Class` + weights, or a pytorch/examples netG.

Weights load with `torch.load(weights_only=True)` (.pt/.pth) or safetensors, never by
unpickling anything else. The latent input's shape comes from the first layer that has
one (Linear: [in]; ConvTranspose2d: [in, 1, 1], the DCGAN convention), else from
`input_shape`. A generator that wants [N, nz, 1, 1] still exports with `z` [N, nz].
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from latentforge.errors import CheckpointError, InputError
from latentforge.models.dcgan import DCGANConfig, DCGANGenerator

from .source import Source

ARCHS = ("dcgan-examples",)


class LatentAdapter(nn.Module):
    """decode(z [N, D]) for a module whose forward takes z reshaped to [N, *input_shape]."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.module = module
        self.input_shape = tuple(input_shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.module(z.reshape(z.shape[0], *self.input_shape))


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from .safetensors, or from .pt/.pth through torch.load(weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist; check the path")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for a bad header
            raise CheckpointError(f"{str(path)!r} is not a readable safetensors file ({e}); re-save it") from None
    if path.suffix.lower() not in (".pt", ".pth"):
        raise InputError(f"--weights must be .pt, .pth or .safetensors, got {str(path)!r}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # the weights-only unpickler refuses anything but tensors and plain containers
        raise CheckpointError(f"{str(path)!r} does not load with torch.load(weights_only=True) "
                              f"({str(e).strip().splitlines()[0]}); save model.state_dict(), not the model") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the Lightning-style wrapper
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(path)!r} holds no state_dict of tensors; save model.state_dict()")
    return state


def first_layer_shape(module: nn.Module) -> tuple[int, ...] | None:
    """The per-sample input shape implied by the module's first parameterized layer, where it says one."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            return (layer.in_features,)
        if isinstance(layer, nn.ConvTranspose2d):
            return (layer.in_channels, 1, 1)
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose3d)):
            return None  # channels known, spatial size not
        if any(True for _ in layer.parameters(recurse=False)):
            return None
    return None


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise InputError(f"--input-shape is the per-sample latent shape without the batch, like 100 or 100,1,1; "
                         f"got {text!r}")
    return shape


def _import_class(spec: str):
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise InputError(f"--module must be pkg.mod:Class, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"cannot import {module_name!r} for --module ({e}); is it on PYTHONPATH?") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise InputError(f"{spec!r} is not an nn.Module class")
    return cls


def _source(module: nn.Module, state: dict, weights, input_shape, value_range, kind: str) -> Source:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{str(weights)!r} does not match the module "
                              f"({str(e).strip().splitlines()[0]}); check --module/--init-args") from None
    module.eval()
    shape = tuple(input_shape) if input_shape else first_layer_shape(module)
    if shape is None:
        raise InputError("cannot tell the latent shape from the module's first layer; give --input-shape, "
                         "e.g. --input-shape 100 or --input-shape 100,1,1")
    adapter = LatentAdapter(module, shape).eval()
    latent_dim = int(torch.tensor(shape).prod())
    try:
        with torch.inference_mode():
            image = adapter.decode(torch.zeros(2, latent_dim))
    except Exception as e:  # whatever the user's forward raises on a wrong shape
        raise InputError(f"the module does not run on latents of shape [N, {', '.join(map(str, shape))}] "
                         f"({str(e).strip().splitlines()[0]}); give the right --input-shape") from None
    if image.dim() != 4:
        raise InputError(f"the module returns shape {list(image.shape)}, not images [N, C, H, W]")
    lo, hi = value_range
    if not lo < hi:
        raise InputError(f"--value-range must be LO,HI with LO < HI, got {value_range}")
    channels, height, width = image.shape[1:]
    return Source(adapter, kind, latent_dim, (height, width, channels), (float(lo), float(hi)), "foreign")


def foreign_source(spec: str, weights, init_args: str | None = None, input_shape=None,
                   value_range=(-1.0, 1.0)) -> Source:
    """Build `pkg.mod:Class(**init_args)`, load `weights` into it, and describe it for export."""
    cls = _import_class(spec)
    try:
        kwargs = json.loads(init_args) if init_args else {}
    except json.JSONDecodeError as e:
        raise InputError(f"--init-args is not valid JSON ({e.msg}): {init_args!r}") from None
    if not isinstance(kwargs, dict):
        raise InputError(f"--init-args must be a JSON object of keyword arguments, got {init_args!r}")
    try:
        module = cls(**kwargs)
    except TypeError as e:
        raise InputError(f"{spec}(**{kwargs}) failed ({e}); check --init-args") from None
    return _source(module, load_weights(weights), weights, input_shape, value_range, "foreign")


def dcgan_examples_source(weights, value_range=(-1.0, 1.0)) -> Source:
    """pytorch/examples' dcgan `netG.pth`: nz, ngf and nc read off the weights, loaded into DCGANGenerator."""
    state = load_weights(weights)
    first, last = state.get("main.0.weight"), state.get("main.12.weight")
    if first is None or last is None or first.dim() != 4:
        raise CheckpointError(f"{str(weights)!r} is not a pytorch/examples DCGAN netG (no main.0.weight / "
                              "main.12.weight); use --module for other architectures")
    config = DCGANConfig(image_size=64, channels=last.shape[1], latent_dim=first.shape[0], ngf=last.shape[0])
    return _source(DCGANGenerator(config), state, weights, (config.latent_dim, 1, 1), value_range, "foreign")
