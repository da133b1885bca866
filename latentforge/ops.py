"""Fused reparameterize-and-decode ops: `reparam_linear`, `to_uint8_image`, `from_uint8_image`.

Each is a function with `impl="auto"|"native"|"ref"`, as in stylegan3's bias_act: "ref" is plain PyTorch and
is the specification; "native" runs the C++/CUDA kernels of csrc/, registered as torch.ops.latentforge.*;
"auto" takes native where it is built for the tensor's device and else ref, warning once why. The native
library is built on first use, not at import (stylegan3's `_init()`): the first op called with impl "auto" or
"native" loads it, compiling it first if this machine has no cached build (see ops_build), so importing
latentforge never stalls on a compiler. `build()` does it ahead of time. Fake kernels and autograd are registered here, so torch.compile and torch.export trace through the ops.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .errors import BackendUnavailable, InputError
from .ops_build import BuildInfo, build as _build_library

IMPLS = ("auto", "native", "ref")
ACTIVATIONS = ("none", "relu", "lrelu", "silu", "tanh")
LEAKY_SLOPE = 0.2
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class _Native:
    """Whether the native library loaded, and if not why; "auto" warns about the why once per process.
    Neither `info` nor `error` set means no load was tried yet."""

    def __init__(self) -> None:
        self.info: BuildInfo | None = None
        self.error: str | None = None
        self.warned = False
        self.registered = False

    def load(self, verbose: bool = False) -> BuildInfo:
        try:
            self.info, self.error = _build_library(verbose=verbose), None
        except BackendUnavailable as e:
            self.info, self.error = None, str(e)
            raise
        if not self.registered:
            _register_python_parts()
            self.registered = True
        return self.info

    def ensure(self) -> None:
        """Try the load once per process, on first use; a failure is kept in `error`, not raised."""
        if self.info is None and self.error is None:
            try:
                self.load()
            except BackendUnavailable:
                pass  # `error` says why; "auto" warns with it, "native" raises it


native = _Native()


def build(verbose: bool = False) -> BuildInfo:
    """Build (or load the cached) native library now; raises BackendUnavailable with the reason."""
    return native.load(verbose)


def use_native(impl: str, device: torch.device) -> bool:
    """Whether `impl` ("auto" | "native" | "ref") runs the native kernel on `device`; "native" raises
    BackendUnavailable where it cannot, "auto" warns once (per process) that it falls back to the reference."""
    if impl not in IMPLS:
        raise InputError(f"impl must be one of {', '.join(map(repr, IMPLS))}, got {impl!r}")
    if impl == "ref":
        return False
    native.ensure()
    if native.info is None:
        reason = f"the native latentforge ops are unavailable: {native.error}"
    elif device.type == "cuda" and not native.info.cuda:
        reason = "the native latentforge ops were built without CUDA (torch saw no GPU or no CUDA_HOME then)"
    elif device.type not in ("cpu", "cuda"):
        reason = f"the native latentforge ops have no kernels for {device.type}"
    else:
        return True
    if impl == "native":
        raise BackendUnavailable(reason)
    if not native.warned:
        native.warned = True
        warnings.warn(f"{reason}; using the PyTorch reference (impl='ref') instead", RuntimeWarning, stacklevel=3)
    return False


# ---------------------------------------------------------------- reparam_linear

def _activate(y: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return torch.relu(y)
    if activation == "lrelu":
        return F.leaky_relu(y, LEAKY_SLOPE)
    if activation == "silu":
        return F.silu(y)
    if activation == "tanh":
        return torch.tanh(y)
    return y


def _activation_grad(y: torch.Tensor, activation: str) -> torch.Tensor:
    """d act(y) / dy, elementwise."""
    if activation == "relu":
        return (y > 0).to(y.dtype)
    if activation == "lrelu":
        return torch.where(y > 0, 1.0, LEAKY_SLOPE).to(y.dtype)
    if activation == "silu":
        s = torch.sigmoid(y)
        return s * (1 + y * (1 - s))
    if activation == "tanh":
        return 1 - torch.tanh(y) ** 2
    return torch.ones_like(y)


def _sample(mu, logvar, eps, offset, temperature) -> tuple[torch.Tensor, torch.Tensor]:
    """z and sigma in float32, in the kernels' order of operations: mu + (t * sigma) * eps + offset."""
    sigma = torch.exp(0.5 * logvar.float())
    z = mu.float() + (temperature * sigma) * eps.float()
    if offset is not None:
        z = z + offset.float()
    return z, sigma


def reparam_linear_ref(mu, logvar, eps, offset, weight, bias, temperature: float, activation: str) -> torch.Tensor:
    """The specification: act((mu + t * exp(logvar / 2) * eps + offset) @ weight.T + bias), in float32, cast back."""
    with torch.autocast(mu.device.type, enabled=False):  # float32 under a caller's autocast too, as native
        z, _ = _sample(mu, logvar, eps, offset, temperature)
        y = F.linear(z, weight.float(), None if bias is None else bias.float())
        return _activate(y, activation).to(mu.dtype)


def _check_reparam(mu, logvar, eps, offset, weight, bias, activation) -> None:
    """The native kernels' TORCH_CHECKs, as one-line InputErrors that name the fix, for both impls."""
    tensors = {"mu": mu, "logvar": logvar, "eps": eps, "offset": offset, "weight": weight, "bias": bias}
    for name, t in tensors.items():
        if t is not None and not isinstance(t, torch.Tensor):
            raise InputError(f"reparam_linear: {name} must be a torch.Tensor, got {type(t).__name__}")
    if activation not in ACTIVATIONS:
        raise InputError(f"reparam_linear: activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if mu.dtype not in DTYPES:
        raise InputError(f"reparam_linear: inputs must be float32, float16 or bfloat16, got {mu.dtype}")
    for name, t in tensors.items():
        if t is not None and t.dtype != mu.dtype:
            raise InputError(f"reparam_linear: {name} is {t.dtype} but mu is {mu.dtype}; pass every input in one dtype")
        if t is not None and t.device != mu.device:
            raise InputError(f"reparam_linear: {name} is on {t.device} but mu is on {mu.device}; "
                             "move every input to one device")
    if mu.dim() != 2:
        raise InputError(f"reparam_linear: mu must be [B, D], got shape {list(mu.shape)}")
    b, d = mu.shape
    for name, t in (("logvar", logvar), ("eps", eps)):
        if t.shape != mu.shape:
            raise InputError(f"reparam_linear: {name} must be [B, D] = {list(mu.shape)} like mu, got {list(t.shape)}")
    if weight.dim() != 2 or weight.shape[1] != d:
        raise InputError(f"reparam_linear: weight must be [H, D] with D = {d}, got shape {list(weight.shape)}")
    if offset is not None and tuple(offset.shape) not in ((d,), (b, d)):
        raise InputError(f"reparam_linear: offset must be [D] or [B, D] with B = {b}, D = {d}, "
                         f"got shape {list(offset.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise InputError(f"reparam_linear: bias must be [H] with H = {weight.shape[0]}, got shape {list(bias.shape)}")


def reparam_linear(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None = None, *, offset: torch.Tensor | None = None,
                   temperature: float = 1.0, activation: str = "none", impl: str = "auto") -> torch.Tensor:
    """act((mu + temperature * exp(0.5 * logvar) * eps + offset) @ weight.T + bias) in one pass.

    mu, logvar, eps [B, D]; offset None, [D] or [B, D] (a latent edit); weight [H, D]; bias None or [H];
    activation one of ACTIVATIONS ("lrelu" has slope 0.2). One dtype for all (float32, float16 or bfloat16);
    the arithmetic is float32. Differentiable in mu, logvar, eps, offset, weight and bias.
    """
    _check_reparam(mu, logvar, eps, offset, weight, bias, activation)
    args = (mu, logvar, eps, offset, weight, bias, float(temperature), activation)
    if use_native(impl, mu.device):
        return torch.ops.latentforge.reparam_linear(*args)
    return reparam_linear_ref(*args)


def _reparam_setup_context(ctx, inputs, output) -> None:
    mu, logvar, eps, offset, weight, bias, temperature, activation = inputs
    ctx.save_for_backward(mu, logvar, eps, offset, weight, bias)
    ctx.temperature, ctx.activation = temperature, activation


def _reparam_backward(ctx, grad: torch.Tensor):
    """Composed of PyTorch ops in float32; z and the pre-activation are recomputed rather than stored."""
    mu, logvar, eps, offset, weight, bias = ctx.saved_tensors
    t = ctx.temperature
    z, sigma = _sample(mu, logvar, eps, offset, t)
    w = weight.float()
    y = F.linear(z, w, None if bias is None else bias.float())
    g = grad.float() * _activation_grad(y, ctx.activation)
    dz = g @ w
    need = ctx.needs_input_grad
    d_offset = None
    if offset is not None and need[3]:
        d_offset = (dz if offset.dim() == 2 else dz.sum(0)).to(offset.dtype)
    return (dz.to(mu.dtype) if need[0] else None,
            (dz * (0.5 * t) * sigma * eps.float()).to(logvar.dtype) if need[1] else None,
            (dz * t * sigma).to(eps.dtype) if need[2] else None,
            d_offset,
            (g.t() @ z).to(weight.dtype) if need[4] else None,
            g.sum(0).to(bias.dtype) if bias is not None and need[5] else None,
            None, None)


def _reparam_fake(mu, logvar, eps, offset, weight, bias, temperature, activation):
    torch._check(mu.dim() == 2 and weight.dim() == 2 and weight.shape[1] == mu.shape[1],
                 lambda: f"reparam_linear: mu [B, D] and weight [H, D] disagree: {mu.shape}, {weight.shape}")
    return mu.new_empty((mu.shape[0], weight.shape[0]))


# ---------------------------------------------------------------- images

def _check_range(name: str, lo: float, hi: float) -> tuple[float, float]:
    lo, hi = float(lo), float(hi)
    if not (abs(lo) < float("inf") and abs(hi) < float("inf") and hi > lo):
        raise InputError(f"{name}: the value range must be finite with hi > lo, got [{lo}, {hi}]")
    return lo, hi


def to_uint8_image_ref(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The specification: float [B, C, H, W] in [lo, hi] -> uint8 [B, H, W, C]; rounded half to even, clamped,
    NaN -> 0 (as latentforge.images.to_uint8)."""
    y = (x.float() - lo) * (255.0 / (hi - lo))
    y = torch.nan_to_num(y, nan=0.0, posinf=255.0, neginf=0.0).round().clamp(0, 255)
    return y.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def to_uint8_image(x: torch.Tensor, lo: float, hi: float, *, impl: str = "auto") -> torch.Tensor:
    """Float [B, C, H, W] (any strides, float32/16/bf16) in [lo, hi] -> uint8 [B, H, W, C] in [0, 255]."""
    lo, hi = _check_range("to_uint8_image", lo, hi)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.dtype not in DTYPES:
        raise InputError(f"to_uint8_image: x must be a float32/float16/bfloat16 tensor [B, C, H, W], got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {list(getattr(x, 'shape', []))}")
    if use_native(impl, x.device):
        return torch.ops.latentforge.to_uint8_image(x, lo, hi)
    return to_uint8_image_ref(x, lo, hi)


def from_uint8_image_ref(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The specification: uint8 [B, H, W, C] -> float32 [B, C, H, W] = x * ((hi - lo) / 255) + lo."""
    y = x.permute(0, 3, 1, 2).float() * ((hi - lo) / 255.0) + lo
    return y.contiguous()


def from_uint8_image(x: torch.Tensor, lo: float, hi: float, *, impl: str = "auto") -> torch.Tensor:
    """uint8 [B, H, W, C] (any strides) -> float32 [B, C, H, W] in [lo, hi]."""
    lo, hi = _check_range("from_uint8_image", lo, hi)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.dtype != torch.uint8:
        raise InputError(f"from_uint8_image: x must be a uint8 tensor [B, H, W, C], got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {list(getattr(x, 'shape', []))}")
    if use_native(impl, x.device):
        return torch.ops.latentforge.from_uint8_image(x, lo, hi)
    return from_uint8_image_ref(x, lo, hi)


def _to_uint8_fake(x, lo, hi):
    b, c, h, w = x.shape
    return x.new_empty((b, h, w, c), dtype=torch.uint8)


def _from_uint8_fake(x, lo, hi):
    b, h, w, c = x.shape
    return x.new_empty((b, c, h, w), dtype=torch.float32)


def _register_python_parts() -> None:
    """Fake kernels and autograd for the ops the native library defined."""
    torch.library.register_fake("latentforge::reparam_linear", _reparam_fake)
    torch.library.register_fake("latentforge::to_uint8_image", _to_uint8_fake)
    torch.library.register_fake("latentforge::from_uint8_image", _from_uint8_fake)
    torch.library.register_autograd("latentforge::reparam_linear", _reparam_backward,
                                    setup_context=_reparam_setup_context)
