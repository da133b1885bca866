"""A checkpoint's decoder rebuilt for inference on latentforge's fused ops.

The latent -> first layer (+ its BatchNorm and activation) becomes one `reparam_linear`; every other BatchNorm
is folded into the (transposed) convolution before it; the float image becomes uint8 NHWC in one
`to_uint8_image`. Eval-mode BatchNorm is an affine map per channel, so folding it changes only rounding.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from latentforge import ops
from latentforge.errors import CheckpointError

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def activation_name(module: nn.Module) -> str | None:
    """The reparam_linear activation that `module` is, or None if it is none of them."""
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.LeakyReLU) and module.negative_slope == ops.LEAKY_SLOPE:
        return "lrelu"
    if isinstance(module, nn.SiLU):
        return "silu"
    if isinstance(module, nn.Tanh):
        return "tanh"
    return None


def batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per channel with bn(x) == x * scale + shift in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise CheckpointError("a BatchNorm layer without running statistics cannot be folded; "
                              "save the checkpoint from a model trained with track_running_stats=True")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def fold_batchnorm(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """A copy of `conv` whose output equals bn(conv(x)); the output channel is dim 0 of a Conv2d weight and
    dim 1 of a ConvTranspose2d one."""
    if conv.groups != 1:
        raise CheckpointError(f"folding BatchNorm into a grouped convolution (groups={conv.groups}) is not supported")
    scale, shift = batchnorm_affine(bn)
    folded = copy.deepcopy(conv)
    shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
    folded.weight = nn.Parameter(conv.weight.detach() * scale.view(shape), requires_grad=False)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(shift)
    folded.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
    return folded


def fold_sequence(modules: list[nn.Module]) -> nn.Sequential:
    """The modules with every BatchNorm2d that follows a convolution folded into it."""
    out: list[nn.Module] = []
    for m in modules:
        if isinstance(m, nn.BatchNorm2d) and out and isinstance(out[-1], CONVS):
            out[-1] = fold_batchnorm(out[-1], m)
        else:
            out.append(m)
    return nn.Sequential(*out)


def _head_and_rest(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int, int], list]:
    """(weight [H, D], bias [H] or None, the head's output shape (C, k, k), the modules after it)."""
    if model.kind == "vae":
        linear = model.from_latent
        return linear.weight.detach(), linear.bias.detach(), (model.top_channels, 4, 4), list(model.decoder)
    if isinstance(getattr(getattr(model, "generator", None), "main", None), nn.Sequential):  # DCGAN-style G
        first, *rest = model.generator.main
        # A transposed convolution of a 1x1 input (stride 1, no padding) is a linear map z -> [C, k, k].
        if not (isinstance(first, nn.ConvTranspose2d) and first.stride == (1, 1) and first.padding == (0, 0)
                and first.groups == 1 and first.kernel_size[0] == first.kernel_size[1]):
            raise CheckpointError(f"the generator's first layer {first} is not the DCGAN projection")
        nz, c, k, _ = first.weight.shape
        weight = first.weight.detach().reshape(nz, c * k * k).t()
        bias = None if first.bias is None else first.bias.detach().repeat_interleave(k * k)
        return weight, bias, (c, k, k), rest
    raise CheckpointError(f"the fused torch backend knows VAEs and DCGAN-style generators, not {model.kind!r}")


class PlainDecoder(nn.Module):
    """The model's own decode for what the fused head does not cover (the MLP generators of 2-D point GANs)."""

    def __init__(self, model: nn.Module, value_range: tuple[float, float]) -> None:
        super().__init__()
        self.model = model
        self.value_range = value_range

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)

    def images(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_images(self(z))

    def to_images(self, y: torch.Tensor) -> torch.Tensor:
        return ops.to_uint8_image_ref(y, *self.value_range)


def fused_or_plain(model: nn.Module, value_range: tuple[float, float]) -> nn.Module:
    """FusedDecoder where the model has a linear head (VAE, DCGAN-style generators), else PlainDecoder."""
    main = getattr(getattr(model, "generator", None), "main", None)
    if model.kind == "vae" or (isinstance(main, nn.Sequential) and isinstance(main[0], nn.ConvTranspose2d)):
        return FusedDecoder(model, value_range)
    return PlainDecoder(model, value_range)


class FusedDecoder(nn.Module):
    """z [N, D] -> float image [N, C, H, W] (`forward`) or uint8 [N, H, W, C] (`images`), on the fused ops."""

    def __init__(self, model: nn.Module, value_range: tuple[float, float]) -> None:
        super().__init__()
        weight, bias, self.head_shape, rest = _head_and_rest(model)
        if rest and isinstance(rest[0], nn.BatchNorm2d):
            scale, shift = batchnorm_affine(rest.pop(0))
            per_row = self.head_shape[1] * self.head_shape[2]  # rows are (channel, y, x), channel-major
            base = bias if bias is not None else torch.zeros(weight.shape[0])
            weight = weight * scale.repeat_interleave(per_row)[:, None]
            bias = base * scale.repeat_interleave(per_row) + shift.repeat_interleave(per_row)
        self.activation = (activation_name(rest[0]) if rest else None) or "none"
        if self.activation != "none":
            rest.pop(0)
        self.register_buffer("weight", weight.contiguous().clone())
        self.register_buffer("bias", None if bias is None else bias.contiguous().clone())
        # logvar and eps for decode(z): zero, read through a stride-0 view, so they cost no memory per batch.
        self.register_buffer("zero", torch.zeros(1, weight.shape[1]))
        self.body = fold_sequence(rest)
        self.value_range = value_range
        self._kernels: dict[str, tuple] = {}

    def kernels(self, device: torch.device) -> tuple:
        """(reparam_linear, to_uint8_image) as raw operators, chosen once per device type rather than per frame:
        the inputs are this module's own and z is checked by Model, so the wrappers' checks (~7 us) are skipped."""
        if device.type not in self._kernels:
            if ops.use_native("auto", device):
                chosen = (torch.ops.latentforge.reparam_linear.default, torch.ops.latentforge.to_uint8_image.default)
            else:
                chosen = (ops.reparam_linear_ref, ops.to_uint8_image_ref)
            self._kernels[device.type] = chosen
        return self._kernels[device.type]

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """act(z @ W.T + b) as reparam_linear(mu=z, temperature=0): z passes through bit for bit, so a seed's
        latents give the same image here as on onnxruntime."""
        zero = self.zero.expand(z.shape[0], -1)
        reparam_linear, _ = self.kernels(z.device)
        h = reparam_linear(z, zero, zero, None, self.weight, self.bias, 0.0, self.activation)
        return h.view(z.shape[0], *self.head_shape).contiguous(memory_format=torch.channels_last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.head(z))

    def images(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_images(self(z))

    def to_images(self, y: torch.Tensor) -> torch.Tensor:
        """float image -> uint8 NHWC in one `to_uint8_image` (which writes NaN as 0: Model checks before)."""
        _, to_uint8_image = self.kernels(y.device)
        return to_uint8_image(y, *self.value_range)
