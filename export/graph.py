"""One path from a `Part` to a checked ONNX graph: export, stamp the metadata, validate against PyTorch.

As in optimum's exporters/onnx, what differs per model is data on the Part (input and output names,
dummy inputs, which inputs have no batch dimension, PSNR peaks, fp32 tolerances, metadata); one
`export_graph` and one `validate` serve every Part, the VQ prior's key/value-cache step included.
Inputs are passed to the module positionally, in the order `make_inputs` gives them, so one wrapper
module serves graphs whose inputs have different names (`z`, `codes`).
"""
from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from latentforge import __version__
from latentforge.checkpoint import PREFIX as META
from latentforge.errors import ExportError, ParityError
from latentforge.golden import KEY as GOLDEN
from latentforge.golden import make_golden

from .parity import ATOL_OF_PEAK, MIN_PSNR, OutputParity, compare

DEFAULT_OPSET = 18
PARITY_BATCHES = (1, 16)
GOLDEN_SEED = 20240601   # the golden input's latents: fixed, so a file's golden check is reproducible
EXPORTERS = ("dynamo", "torchscript")


@dataclass
class ExportResult:
    path: Path | None
    parity: list[OutputParity] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # precision, gate, op counts, fp32-kept nodes, engine facts

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.parity)

    def report(self) -> dict:
        shown = {k: v for k, v in self.metadata.items() if k != GOLDEN}   # tens of KB of base64: not for reading
        return {"path": str(self.path) if self.path else None, "passed": self.passed,
                "metadata": shown, **self.details, "outputs": [p.to_dict() for p in self.parity]}


@dataclass
class Part:
    """A graph to export: its PyTorch module (also the reference it is checked against) and the data around it."""
    name: str                                                        # decoder | encoder | filter | prior
    module: nn.Module
    make_inputs: Callable[[int, int | None], dict[str, np.ndarray]]  # (n, seed) -> inputs, in forward's order
    outputs: list[str]
    peaks: dict[str, float]                                          # PSNR peak (signal span) per output
    metadata: dict[str, str]                                         # `latentforge.*` keys but the precision
    fixed: tuple[str, ...] = ()                                      # inputs without a batch dimension
    atol: float = 1e-4                                               # fp32 tolerances against the module
    rtol: float = 1e-3

    def reference(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.module(*(torch.from_numpy(v) for v in inputs.values()))
        out = out if isinstance(out, tuple) else (out,)
        return {name: t.contiguous().numpy() for name, t in zip(self.outputs, out)}

    def metadata_at(self, precision: str, gate: dict | None = None, half_inputs: bool = False) -> dict[str, str]:
        """The metadata_props of this part's graph at `precision` (fp32 | fp16 | bf16 | int8), with its golden
        check (latentforge/golden.py): `gate` is the tolerance this precision was exported under, where it differs
        from the default; `half_inputs` stores float inputs as fp16, for a graph that takes them so."""
        return {**self.metadata, META + "precision": precision, GOLDEN: self.golden(precision, gate, half_inputs)}

    def golden_feed(self, seed: int) -> dict[str, np.ndarray]:
        """The golden check's input: one draw at batch 1."""
        return self.make_inputs(1, seed)

    @cached_property
    def golden_pair(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        inputs = self.golden_feed(GOLDEN_SEED)
        return inputs, self.reference(inputs)

    def golden(self, precision: str, gate: dict | None = None, half_inputs: bool = False) -> str:
        """One input at batch 1 and the reference's output for it, with every precision's tolerance."""
        inputs, outputs = self.golden_pair
        if half_inputs:
            inputs = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in inputs.items()}
        tolerances = {"fp32": {"atol": self.atol, "rtol": self.rtol, "min_psnr": None}}
        tolerances |= {p: {"atol_of_peak": ATOL_OF_PEAK[p], "min_psnr": MIN_PSNR[p]} for p in ATOL_OF_PEAK}
        if gate:
            tolerances[precision] = gate
        return make_golden(inputs, outputs, self.peaks, tolerances)

    def parity_cases(self, batches) -> list[tuple[str, dict[str, np.ndarray]]]:
        """(label, fresh inputs) per check: one per batch size, new entropy every export."""
        return [(f"batch={n}", self.make_inputs(n, None)) for n in batches]


class Decode(nn.Module):
    """model.decode(latent) -> image [N, C, H, W]: the latent is a vector [N, D] or a VQ code grid [N, h, w]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.decode(latent)


def metadata(kind: str, part: str, image_shape, value_range, data: str, **facts: str) -> dict[str, str]:
    """The `latentforge.*` metadata_props of a graph, precision aside. `image_shape` is (H, W, C), the order of
    the runtime's `Model.image_shape`; `image_layout` says so, as files exported before it carry (C, H, W)."""
    meta = {"version": __version__, "kind": kind, "part": part,
            "image_shape": json.dumps([int(v) for v in image_shape]), "image_layout": "HWC",
            "value_range": json.dumps([float(v) for v in value_range]), "data": data, **facts}
    return {META + k: v for k, v in meta.items()}


def stamp(proto, meta: dict[str, str]) -> None:
    """Stamp producer and `latentforge.*` metadata_props on a ModelProto (replacing any there)."""
    proto.producer_name = "latentforge"
    proto.producer_version = __version__
    del proto.metadata_props[:]
    for key, value in sorted(meta.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def _to_onnx(part: Part, example: tuple[torch.Tensor, ...], names: list[str], opset: int, exporter: str):
    import onnx

    module = part.module.eval()
    if exporter == "dynamo":
        batch = torch.export.Dim("batch")
        dynamic = tuple(None if name in part.fixed else {0: batch} for name in names)
        return torch.onnx.export(module, example, dynamo=True, input_names=names, output_names=part.outputs,
                                 dynamic_shapes=dynamic, opset_version=opset, verbose=False).model_proto
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in [*names, *part.outputs] if name not in part.fixed}
    torch.onnx.export(module, example, buffer, dynamo=False, input_names=names, output_names=part.outputs,
                      dynamic_axes=axes, opset_version=opset)
    return onnx.load_from_string(buffer.getvalue())


def export_graph(part: Part, opset: int = DEFAULT_OPSET, exporter: str = "dynamo") -> bytes:
    """The part's fp32 graph with a dynamic batch (but for `part.fixed`), stamped and checked by onnx.checker.

    "torchscript" is the older exporter: 0.6 s for the faces VAE's filter where dynamo takes 6-13 s, for graphs
    made while a user waits."""
    import onnx

    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    inputs = part.make_inputs(2, 0)
    example = tuple(torch.from_numpy(v) for v in inputs.values())
    # The exporters log about optional torchvision ops and deprecated APIs; neither concerns a user.
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        try:
            proto = _to_onnx(part, example, list(inputs), opset, exporter)
        except Exception as e:
            raise ExportError(f"torch.onnx could not export the {part.metadata.get(META + 'kind')} {part.name} "
                              f"at opset {opset}: {str(e).strip().splitlines()[0]}") from e
        finally:
            onnx_logger.setLevel(level)
    stamp(proto, part.metadata_at("fp32"))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def ort_runner(graph: bytes):
    """feed -> {output: array} on onnxruntime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    # A graph with fp16 inputs (--fp16-io) gets the float32 parity inputs cast, as its caller would.
    half = {i.name for i in session.get_inputs() if i.type == "tensor(float16)"}

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: v.astype(np.float16) if k in half else v for k, v in feed.items()}
        return dict(zip(names, session.run(names, feed)))

    return run


def validate(part: Part, run, *, atol: float | None = None, rtol: float | None = None,
             atol_of_peak: float | None = None, min_psnr: float | None = None,
             batches=PARITY_BATCHES) -> list[OutputParity]:
    """Compare `run(feed)` with the part's module on fresh inputs, per output.

    Default tolerances: the part's fp32 ones, or (for a lower precision) `atol_of_peak` times the output's peak."""
    results = []
    for label, feed in part.parity_cases(batches):
        ref, got = part.reference(feed), run(feed)
        for name in part.outputs:
            peak = part.peaks[name]
            default = (part.atol, part.rtol) if atol_of_peak is None else (atol_of_peak * peak, 0.0)
            results.append(compare(f"{name}[{label}]", ref[name], got[name], default[0] if atol is None else atol,
                                   default[1] if rtol is None else rtol, peak=peak, min_psnr=min_psnr))
    return results


def checked_graph(part: Part, what: str, opset: int = DEFAULT_OPSET, exporter: str = "dynamo",
                  remedy: str = "", batches=PARITY_BATCHES) -> bytes:
    """`export_graph`, then `validate` on onnxruntime; ExportError or ParityError (`what` disagrees..., `remedy`)
    when either fails."""
    tail = f"; {remedy}" if remedy else ""
    try:
        data = export_graph(part, opset, exporter)
    except ExportError as e:
        raise ExportError(f"{e}{tail}") from e
    result = ExportResult(None, validate(part, ort_runner(data), batches=batches), part.metadata_at("fp32"))
    if not result.passed:
        raise ParityError(f"{what} disagrees with PyTorch: "
                          + "; ".join(p.line() for p in result.parity if not p.passed) + tail, result)
    return data
