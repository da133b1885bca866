"""A graph's golden check: one small input and what the fp32 PyTorch reference gives for it, carried in the graph's
metadata (`latentforge.golden`, written by export/graph.py), so a loader can run the artifact once and refuse it when
it does not reproduce them within its precision's tolerance (`latentforge.load(..., verify=True)`). This catches a
damaged weight, or weights that do not belong to the metadata, before a frame is served. numpy only: an `.onnx`
app never imports torch.

Stored compactly: each array as base64 of its zlib-compressed little-endian bytes; an output of more than
MAX_VALUES values keeps every k-th value of its flat form (a damaged or foreign weight moves nearly every value,
so a strided sample catches it as surely as the whole: the 64 px faces decoder's check is 19 KB).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from typing import Callable

import numpy as np

from .checkpoint import PREFIX
from .errors import CheckpointError
from .parity import OutputParity, compare

KEY = PREFIX + "golden"
MAX_VALUES = 4096
DTYPES = ("float32", "float16", "int64", "uint8")
MAX_BYTES = 64 << 20   # what an array of the golden check may unpack to: a corrupt header cannot ask for more


def _pack(array: np.ndarray, stride: int = 1) -> dict:
    flat = np.ascontiguousarray(array).reshape(-1)[::stride]
    data = zlib.compress(flat.astype(flat.dtype.newbyteorder("<")).tobytes(), 6)
    return {"dtype": str(array.dtype), "shape": list(array.shape), "stride": stride,
            "data": base64.b64encode(data).decode("ascii")}


def _unpack(entry: dict) -> tuple[np.ndarray, tuple[int, ...], int]:
    """(the stored values, the full array's shape, the stride they were taken at); ValueError when malformed."""
    dtype, shape, stride = entry["dtype"], tuple(int(v) for v in entry["shape"]), int(entry["stride"])
    if dtype not in DTYPES or min(shape, default=1) < 0 or stride < 1:
        raise ValueError(f"dtype {dtype!r}, shape {list(shape)} or stride {stride} out of range")
    count = -(-math.prod(shape) // stride)
    itemsize = np.dtype(dtype).itemsize
    if count * itemsize > MAX_BYTES:
        raise ValueError(f"shape {list(shape)} is larger than a golden check holds")
    raw = zlib.decompressobj().decompress(base64.b64decode(entry["data"], validate=True), count * itemsize + 1)
    if len(raw) != count * itemsize:
        raise ValueError(f"{len(raw)} bytes where shape {list(shape)} at stride {stride} needs {count * itemsize}")
    return np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype), shape, stride


def make_golden(inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], peaks: dict[str, float],
                tolerances: dict[str, dict]) -> str:
    """The metadata value: `inputs` whole, the reference `outputs` (sampled when large), each output's PSNR peak
    and the tolerance of every precision ({"fp32": {"atol", "rtol", "min_psnr"}, "fp16": {"atol_of_peak",
    "min_psnr"}, ...})."""
    packed_out = {name: _pack(out, max(1, -(-out.size // MAX_VALUES))) for name, out in outputs.items()}
    return json.dumps({"inputs": {name: _pack(v) for name, v in inputs.items()}, "outputs": packed_out,
                       "peaks": peaks, "tolerances": tolerances}, separators=(",", ":"))


def golden_verdicts(text: str, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                    precision: str) -> list[OutputParity]:
    """Run the golden input through `run` and compare each output at `precision`'s tolerance; ValueError (or
    KeyError, TypeError) when the metadata value is malformed."""
    golden = json.loads(text)
    feeds = {}
    for name, entry in golden["inputs"].items():
        values, shape, stride = _unpack(entry)
        if stride != 1:
            raise ValueError(f"input {name!r} is sampled")
        feeds[str(name)] = values.reshape(shape)
    tolerance = golden["tolerances"][precision]
    got = run(feeds)
    verdicts = []
    for name, entry in golden["outputs"].items():
        expected, shape, stride = _unpack(entry)
        peak = float(golden["peaks"][name])
        if "atol_of_peak" in tolerance:
            atol, rtol = float(tolerance["atol_of_peak"]) * peak, 0.0
        else:
            atol, rtol = float(tolerance["atol"]), float(tolerance["rtol"])
        min_psnr = tolerance.get("min_psnr")
        actual = np.asarray(got[name])
        if actual.shape != shape:   # compare reports a shape mismatch as a failure
            verdicts.append(compare(name, expected, actual, atol, rtol, peak, min_psnr))
            continue
        verdicts.append(compare(f"{name}[golden]", expected, actual.reshape(-1)[::stride], atol, rtol, peak,
                                None if min_psnr is None else float(min_psnr)))
    return verdicts


def verify(metadata: dict[str, str], run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
           precision: str, label: str) -> None:
    """Refuse (CheckpointError, one line) a graph without a golden check, or one that does not reproduce it."""
    redo = "re-export it with `latentforge export`"
    if KEY not in metadata:
        raise CheckpointError(f"{label} carries no golden input and output (latentforge.golden) to verify it by; "
                              f"{redo}, or load it with verify=False")
    try:
        verdicts = golden_verdicts(metadata[KEY], run, precision)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, zlib.error) as e:
        raise CheckpointError(f"{label} has a malformed latentforge.golden ({type(e).__name__}: "
                              f"{str(e)[:120]!r}); {redo}") from None
    failed = [v for v in verdicts if not v.passed]
    if failed:
        raise CheckpointError(f"{label} does not reproduce its golden output at {precision}: {failed[0].line()}; the "
                              f"file is damaged or its weights do not belong to it: {redo}")
