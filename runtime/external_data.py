"""The external-data check every `.onnx` file passes before a backend opens it (also: metadata is UTF-8).

An ONNX graph may keep its tensors in other files, named by a path inside the graph. onnx and
onnxruntime have both followed such paths out of the model's folder (CVE-2022-25882, CVE-2024-27318),
so the runtime reads the graph's structure first (protobuf only, no tensor bytes) and refuses, before
anything else is read, an entry that: is absolute or climbs with "..", resolves (through symlinks)
outside the model's folder, names no file, or whose offset and length fall outside that file or do
not match the tensor's dtype and shape.
"""
from __future__ import annotations

import math
from pathlib import Path

from latentforge.errors import CheckpointError

FIX = "re-export the model with `latentforge export`, keeping its .onnx and data files together in one folder"


def _tensors(graph):
    """Every TensorProto in `graph` and its subgraphs: initializers and tensor-valued node attributes."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _tensors(sub)


def _item_size(onnx, data_type: int) -> float | None:
    """Bytes per element of an ONNX tensor type (0.5 for 4-bit types), None when unknown or variable (strings)."""
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(data_type)
    except (KeyError, ValueError, TypeError):
        return None
    if dtype.kind in "OSU":
        return None
    bits = getattr(onnx.TensorProto, "INT4", None), getattr(onnx.TensorProto, "UINT4", None)
    return 0.5 if data_type in bits else float(dtype.itemsize)


def check_external_data(path: Path) -> None:
    """A CheckpointError unless every external-data entry of the graph at `path` stays within its folder and files."""
    import onnx

    try:
        model = onnx.ModelProto.FromString(Path(path).read_bytes())
    except Exception as e:  # protobuf's DecodeError and friends: a damaged file
        raise CheckpointError(f"{str(path)!r} is not a readable ONNX model ({type(e).__name__}); {FIX}") from None
    if not all(isinstance(p.key, str) and isinstance(p.value, str) for p in model.metadata_props):
        raise CheckpointError(f"{str(path)!r} has metadata_props that are not UTF-8 text; {FIX}")
    folder = Path(path).resolve().parent
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entry = {e.key: e.value for e in tensor.external_data}
        if not all(isinstance(v, str) for pair in entry.items() for v in pair):   # proto2 hands bad UTF-8 as bytes
            raise CheckpointError(f"{str(path)!r}: tensor {tensor.name[:80]!r} has external-data entries that are "
                                  f"not UTF-8 text; {FIX}")
        where = f"{str(path)!r}: tensor {tensor.name[:80]!r} keeps its data in {entry.get('location', '')[:80]!r}"
        location = entry.get("location", "")
        relative = Path(location)
        if not location or "\x00" in location or relative.is_absolute() or ".." in relative.parts:
            raise CheckpointError(f"{where}, which is not a file name inside the model's folder; {FIX}")
        target = (folder / relative).resolve()
        if not target.is_relative_to(folder) or not target.is_file():
            state = "outside the model's folder" if not target.is_relative_to(folder) else "missing"
            raise CheckpointError(f"{where}, which is {state}; {FIX}")
        size = target.stat().st_size
        try:
            offset = int(entry.get("offset", "0"))
            length = int(entry["length"]) if "length" in entry else size - offset
        except ValueError:
            raise CheckpointError(f"{where}, with an offset or length that is not a number; {FIX}") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise CheckpointError(f"{where}, at bytes {offset}..{offset + length}, past the file's {size} bytes; {FIX}")
        item = _item_size(onnx, tensor.data_type)
        if item is not None and length != math.prod(tensor.dims) * item:
            raise CheckpointError(f"{where}: {length} bytes for a tensor of shape {list(tensor.dims)[:8]}, which "
                                  f"needs {math.prod(tensor.dims) * item:.0f}; {FIX}")
