"""A Triton Inference Server model folder: MODEL/config.pbtxt and MODEL/1/model.onnx (or model.plan).

The folder is assembled beside its destination and moved into place in one rename, so a
failed export leaves nothing. The config is written as protobuf text for Triton's
ModelConfig (the tests parse it with tritonclient's model_config_pb2).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from latentforge.files import atomic_write_bytes

from .graph import Part

DTYPES = {np.dtype(np.float32): "TYPE_FP32", np.dtype(np.float16): "TYPE_FP16", np.dtype(np.uint8): "TYPE_UINT8"}
QUEUE_DELAY_US = 100  # how long dynamic batching waits to fill a batch


def _tensor(name: str, dims: list[int], dtype) -> str:
    return f'  {{ name: "{name}" data_type: {DTYPES[np.dtype(dtype)]} dims: [ {", ".join(map(str, dims))} ] }}'


def graph_dtypes(graph: bytes) -> dict[str, np.dtype]:
    """The element types of an ONNX graph's inputs and outputs (fp16 ones after --fp16-io)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    proto = onnx.load_from_string(graph)
    return {v.name: tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
            for v in [*proto.graph.input, *proto.graph.output]}


def config_text(name: str, part: Part, platform: str, batch: tuple[int, int, int],
                dtypes: dict[str, np.dtype] | None = None) -> str:
    """config.pbtxt; `dtypes` overrides the part's own I/O types. A part with an unbatched input (the filter's
    temperature [1]) cannot use Triton's implicit batch dimension, so it gets max_batch_size 0, explicit -1
    batch dims and no dynamic batching."""
    sample = part.make_inputs(1, 0)
    outputs = part.reference(sample)
    batched = not part.fixed
    dtypes = {**{n: v.dtype for n, v in [*sample.items(), *outputs.items()]}, **(dtypes or {})}

    def tensor(n, v):
        dims = list(v.shape) if n in part.fixed else list(v.shape[1:]) if batched else [-1, *v.shape[1:]]
        return _tensor(n, dims, dtypes[n])

    inputs = [tensor(n, v) for n, v in sample.items()]
    lines = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {batch[2] if batched else 0}",
             "input [", ",\n".join(inputs), "]",
             "output [", ",\n".join(tensor(n, v) for n, v in outputs.items()), "]"]
    if batched:
        preferred = " ".join(f"preferred_batch_size: {b}" for b in sorted({batch[1], batch[2]}))
        lines.append(f"dynamic_batching {{ {preferred} max_queue_delay_microseconds: {QUEUE_DELAY_US} }}")
    kind = "KIND_GPU" if platform == "tensorrt_plan" else "KIND_AUTO"
    lines.append(f"instance_group [ {{ count: 1 kind: {kind} }} ]")
    return "\n".join(lines) + "\n"


def write_repository(out: str | os.PathLike, part: Part, model, batch: tuple[int, int, int]) -> Path:
    """`model` is ONNX bytes or a tensorrt.Engine; the folder's name is the model's name in Triton."""
    out = Path(out)
    is_onnx = isinstance(model, bytes)
    platform = "onnxruntime_onnx" if is_onnx else "tensorrt_plan"
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "1").mkdir()
        dtypes = graph_dtypes(model) if is_onnx else None
        atomic_write_bytes(tmp / "config.pbtxt", config_text(out.name, part, platform, batch, dtypes).encode())
        if is_onnx:
            atomic_write_bytes(tmp / "1" / "model.onnx", model)
        else:
            model.write(tmp / "1" / "model.plan")
        os.chmod(tmp, 0o777 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
