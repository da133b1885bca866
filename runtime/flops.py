"""FLOPs per image of a decoder: 2 x the multiply-accumulates of its Conv, ConvTranspose and Linear/Gemm/MatMul.

Elementwise ops (bias, activations, BatchNorm) are left out: they are a few percent of the work
and run at memory speed, not at the matmul ceiling that achieved GFLOP/s is compared with.
Two independent counts, from the nn.Module's forward hooks and from the exported ONNX graph's
shapes, so an `.onnx` alone can be benchmarked and each count checks the other.
"""
from __future__ import annotations

import math
import os

ONNX_MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def count_flops_torch(module, latent_dim: int, call=None) -> int:
    """FLOPs of `module.decode` (or of `call(module)`, e.g. an encode and a decode) for one image, from forward
    hooks on its layers."""
    import torch
    from torch import nn

    macs = 0

    def hook(layer, inputs, output):
        nonlocal macs
        if isinstance(layer, nn.modules.conv._ConvTransposeNd):
            # every input element is scattered into out_channels/groups x kernel outputs
            macs += inputs[0].numel() * layer.out_channels // layer.groups * math.prod(layer.kernel_size)
        elif isinstance(layer, nn.modules.conv._ConvNd):
            macs += output.numel() * layer.in_channels // layer.groups * math.prod(layer.kernel_size)
        else:
            macs += output.numel() * layer.in_features

    layers = [m for m in module.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.inference_mode():
            module.decode(torch.zeros(1, latent_dim)) if call is None else call(module)
    finally:
        for handle in handles:
            handle.remove()
    return 2 * macs


def count_flops_onnx(source: str | os.PathLike | bytes) -> int:
    """FLOPs of an exported graph for one image, from its shapes with the batch fixed to 1."""
    import onnx

    model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[0].dim_value = 1  # the dynamic batch; one image
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def shape(name: str, node) -> list[int]:
        dims = shapes.get(name)
        if not dims or None in dims:
            raise ValueError(f"shape of {name!r} (input/output of {node.op_type} {node.name!r}) is unknown")
        return dims

    macs = 0
    for node in model.graph.node:
        if node.op_type not in ONNX_MAC_OPS:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        y = shape(node.output[0], node)
        if node.op_type == "Conv":  # W [C_out, C_in/groups, k...]
            macs += math.prod(y) * math.prod(shape(node.input[1], node)[1:])
        elif node.op_type == "ConvTranspose":  # W [C_in, C_out/groups, k...]
            macs += math.prod(shape(node.input[0], node)) * math.prod(shape(node.input[1], node)[1:])
        elif node.op_type == "Gemm":
            a = shape(node.input[0], node)
            macs += math.prod(y) * (a[0] if attrs.get("transA", 0) else a[1])
        else:
            macs += math.prod(y) * shape(node.input[0], node)[-1]
    return 2 * macs
