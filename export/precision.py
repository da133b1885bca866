"""Precision variants of an fp32 ONNX graph, its clean-up with onnxslim, and the quality gates they must pass.

- fp16: onnxconverter-common, I/O kept fp32. Nodes whose activations leave the fp16
  range on calibration inputs (the known VAE-decoder overflow) stay fp32 and are named.
- bf16: onnxruntime's CPU provider has no bf16 kernels for Conv/ConvTranspose/Gemm, so
  the written graph is the fp32 one marked `latentforge.precision=bf16`, for runtimes that
  compute in bf16 on request (TensorRT's BF16 flag, OpenVINO's bf16 inference precision).
  Its gate runs on OpenVINO at bf16 where this CPU computes bf16 (pipeline.openvino_has_bf16),
  else an emulation on onnxruntime: every weight and every activation rounded through bf16,
  accumulation in fp32, which is what bf16 matrix units do.
- int8: onnxruntime static quantization, QDQ, calibrated on the part's own inputs.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from latentforge.errors import ExportError

from .graph import stamp

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
FP16_LIMIT = 65504.0 / 2  # half the fp16 range: margin for inputs the calibration batch did not cover


def op_counts(proto: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(node.op_type for node in proto.graph.node).items()))


def slim(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int], dict[str, int]]:
    """onnxslim's constant folding and dead-node removal; returns (graph, ops before, ops after)."""
    import onnxslim

    meta = {p.key: p.value for p in proto.metadata_props}
    before = op_counts(proto)
    try:
        slimmed = onnxslim.slim(proto)
    except Exception as e:  # onnxslim raises whatever its passes raise
        raise ExportError(f"onnxslim could not clean up the graph ({str(e).strip().splitlines()[0]}); "
                          "report it, or export with --no-slim") from e
    stamp(slimmed, meta)
    return slimmed, before, op_counts(slimmed)


def _float_tensors(proto: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every float32 tensor a node produces, typed by shape inference."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    typed = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    return {name: typed[name] for node in proto.graph.node for name in node.output
            if name in typed and typed[name].type.tensor_type.elem_type == TensorProto.FLOAT}


def activation_peaks(proto: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """max |x| of every float tensor the nodes produce, over the calibration feeds (NaN counts as inf)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(v for name, v in _float_tensors(proto).items() if name not in known)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    peak = dict.fromkeys(names, 0.0)
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            if value.dtype == np.float32 and value.size:
                peak[name] = max(peak[name], float(np.nan_to_num(np.abs(value), nan=np.inf).max()))
    return peak


def fp16_unsafe_nodes(proto: onnx.ModelProto, peaks: dict[str, float]) -> list[str]:
    """Nodes that make or take a tensor beyond FP16_LIMIT: both ends stay fp32, so the tensor is never cast."""
    unsafe = {name for name, value in peaks.items() if value > FP16_LIMIT}
    return sorted({node.name for node in proto.graph.node if unsafe & {*node.input, *node.output}})


def to_fp16(proto: onnx.ModelProto, feeds: list[dict[str, np.ndarray]],
            fp16_io: bool = False) -> tuple[onnx.ModelProto, list[str]]:
    """fp16 graph (float I/O stays fp32 unless `fp16_io`); nodes whose calibration activations exceed
    FP16_LIMIT stay fp32."""
    from onnxconverter_common import float16

    kept = fp16_unsafe_nodes(proto, activation_peaks(proto, feeds))
    meta = {p.key: p.value for p in proto.metadata_props}
    # The graph's own Casts stay fp32 (named, not by op type: the converter would then also match the
    # casts it inserts, forever): it retypes a Cast's target but not its recorded output type, which
    # breaks the filter's uint8 <-> float casts.
    casts = [node.name for node in proto.graph.node if node.op_type == "Cast"]
    converted = float16.convert_float_to_float16(proto, keep_io_types=not fp16_io, node_block_list=kept + casts or None)
    del converted.graph.value_info[:]  # it can leave a stale fp32 entry beside the fp16 one; onnxruntime infers types
    stamp(converted, meta)
    return converted, kept


def bf16_emulation(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 graph with every float weight and node output rounded through bf16 (Cast there and back)."""
    import ml_dtypes

    emu = onnx.ModelProto()
    emu.CopyFrom(proto)
    for init in emu.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            rounded = numpy_helper.to_array(init).astype(ml_dtypes.bfloat16).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(rounded, init.name))
    tensors = _float_tensors(proto)
    nodes = []
    for node in emu.graph.node:
        nodes.append(node)
        if node.op_type == "Constant":
            continue
        for i, out in enumerate(node.output):
            if out not in tensors:
                continue
            raw = out + "__fp32"
            node.output[i] = raw
            nodes.append(helper.make_node("Cast", [raw], [out + "__bf16"], to=TensorProto.BFLOAT16))
            nodes.append(helper.make_node("Cast", [out + "__bf16"], [out], to=TensorProto.FLOAT))
    del emu.graph.node[:]
    emu.graph.node.extend(nodes)
    del emu.graph.value_info[:]
    return emu


class _Feeds:
    """onnxruntime's CalibrationDataReader over a list of feeds (defined lazily: the import is heavy)."""

    def __new__(cls, feeds):
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter(feeds)

            def get_next(self):
                return next(self.items, None)

        return Reader()


WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def edge_layers(proto: onnx.ModelProto) -> list[str]:
    """The weighted layers that read the graph's inputs or write its outputs (through any ops without
    weights between). int8 keeps them float, as is usual: quantizing a N(0, I) latent or a final image
    costs the most PSNR for the least speed (on the shipped faces decoder, 35 -> 45 dB)."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def walk(tensors: list[str], nodes_of, next_tensors) -> set[str]:
        found, seen, stack = set(), set(), list(tensors)
        while stack:
            for node in nodes_of(stack.pop()):
                if node.name in seen:
                    continue
                seen.add(node.name)
                if node.op_type in WEIGHTED:
                    found.add(node.name)
                else:
                    stack.extend(next_tensors(node))
        return found

    last = walk([o.name for o in proto.graph.output], lambda t: [producer[t]] if t in producer else [],
                lambda node: node.input)
    first = walk([i.name for i in proto.graph.input], lambda t: consumers.get(t, []), lambda node: node.output)
    return sorted(first | last)


def to_int8(proto: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> onnx.ModelProto:
    """Static QDQ quantization (int8 weights per channel, int8 activations), calibrated on `feeds`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    meta = {p.key: p.value for p in proto.metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(source))  # from a file: given a ModelProto, quantize_static moves its weights out of it
        try:
            quantize_static(source, out, _Feeds(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=edge_layers(proto))
        except Exception as e:
            raise ExportError(f"onnxruntime could not quantize the graph to int8 "
                              f"({str(e).strip().splitlines()[0]}); export fp16 instead") from e
        quantized = onnx.load(str(out))
    stamp(quantized, meta)
    return quantized


def variant(proto: onnx.ModelProto, precision: str, feeds: list[dict[str, np.ndarray]], fp16_io: bool = False):
    """(graph to write, graph whose outputs the gate measures, nodes kept fp32)."""
    if precision == "fp32":
        return proto, proto, []
    if precision == "fp16":
        converted, kept = to_fp16(proto, feeds, fp16_io)
        return converted, converted, kept
    if precision == "bf16":
        return proto, bf16_emulation(proto), []
    if precision == "int8":
        quantized = to_int8(proto, feeds)
        return quantized, quantized, []
    raise ExportError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")

