"""Every part x precision exports, passes its gate, and runs in plain onnxruntime; gates fail closed."""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from latentforge.checkpoint import load_checkpoint
from latentforge.cli import main
from latentforge.errors import ExportError, ParityError
from latentforge.export.parity import compare
from latentforge.export.source import Source
from latentforge.export.pipeline import ExportOptions, export, export_precisions
from latentforge.export.precision import FP16_LIMIT, activation_peaks
from latentforge.images import from_uint8, to_uint8
from latentforge.latents import latents
from latentforge.models import reparam_numpy

IO = {"decoder": (["z"], ["image"]), "encoder": (["image"], ["mu", "logvar"]),
      "filter": (["frame", "offset", "temperature", "eps"], ["frame_out", "finite"])}


def _meta(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _fresh_check(checkpoint, part, n=5):
    """A feed at a batch size the export's own check did not use, and the PyTorch answer with its PSNR peak."""
    model, info = load_checkpoint(checkpoint)
    with torch.inference_mode():
        x = to_uint8(model.decode(torch.from_numpy(latents(n, 8))).numpy(), info.value_range)
        image = from_uint8(x, info.value_range)
        if part == "decoder":
            z = latents(n, 8)
            return {"z": z}, model.decode(torch.from_numpy(z)).numpy(), 1.0
        if part == "encoder":
            return {"image": image}, model.encode(torch.from_numpy(image))[0].numpy(), 6.0
        mu, _ = model.encode(torch.from_numpy(image))
        feed = {"frame": x, "offset": np.zeros((n, 8), np.float32), "temperature": np.zeros(1, np.float32),
                "eps": latents(n, 8)}
        return feed, to_uint8(model.decode(mu).numpy(), info.value_range), 255.0


@pytest.mark.parametrize("part", ["decoder", "encoder", "filter"])
def test_every_part_and_precision_passes_its_gate(vae_checkpoint, tmp_path, part):
    precisions = ("fp32", "fp16", "bf16", "int8")
    results = export_precisions(vae_checkpoint, {p: tmp_path / f"{part}-{p}.onnx" for p in precisions},
                                ExportOptions(part=part))
    feed, ref, peak = _fresh_check(vae_checkpoint, part)
    for precision, result in results.items():
        assert result.passed and result.path.is_file()
        meta = _meta(result.path)
        assert meta["latentforge.part"] == part and meta["latentforge.precision"] == precision
        assert meta["latentforge.kind"] == "vae" and json.loads(meta["latentforge.attributes"])["smile"]
        session = _session(result.path)
        assert [i.name for i in session.get_inputs()] == IO[part][0]
        assert [o.name for o in session.get_outputs()] == IO[part][1]
        report = result.report()
        assert report["precision"] == precision and report["fp32_parity"] and report["ops_after_slim"]
        if precision != "fp32":
            assert all(p.min_psnr is not None and p.psnr_db >= p.min_psnr for p in result.parity)
        got = session.run(None, feed)[0]
        gate = {"fp32": 60.0, "fp16": 40.0, "bf16": 35.0, "int8": 30.0}[precision]
        assert np.isfinite(got.astype(np.float64)).all()
        assert compare("out", ref, got, atol=np.inf, rtol=0, peak=peak).psnr_db >= gate, precision
    sizes = {p: r.path.stat().st_size for p, r in results.items()}
    assert sizes["fp16"] < sizes["fp32"] and sizes["int8"] < sizes["fp32"]


def test_filter_graph_contract_and_bytes_match_the_numpy_path(vae_checkpoint, tmp_path):
    """uint8 camera frames in, uint8 display frames out, rounding exactly as latentforge.images does."""
    out = export(vae_checkpoint, tmp_path / "filter.onnx", ExportOptions(part="filter")).path
    proto = onnx.load(str(out))
    types = {v.name: v.type.tensor_type for v in [*proto.graph.input, *proto.graph.output]}
    u8, f32 = onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT
    assert {k: t.elem_type for k, t in types.items()} == {"frame": u8, "offset": f32, "temperature": f32,
                                                         "eps": f32, "frame_out": u8, "finite": u8}
    dims = {k: [d.dim_value or d.dim_param for d in t.shape.dim] for k, t in types.items()}
    assert dims["frame"][1:] == [32, 32, 3] and dims["temperature"] == [1] and dims["eps"][1:] == [8]
    assert isinstance(dims["frame"][0], str) and dims["frame"][0] == dims["offset"][0] == dims["frame_out"][0]

    model, info = load_checkpoint(vae_checkpoint)
    rng = np.random.default_rng()
    frame = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)  # arbitrary camera bytes
    offset = rng.standard_normal((3, 8)).astype(np.float32)
    temperature = np.array([0.7], np.float32)
    eps = latents(3, 8)
    got, finite = _session(out).run(None, {"frame": frame, "offset": offset, "temperature": temperature, "eps": eps})
    assert finite.dtype == np.uint8 and finite.tolist() == [1, 1, 1]   # the NaN guard's flag: every frame finite
    with torch.inference_mode():
        mu, logvar = (t.numpy() for t in model.encode(torch.from_numpy(from_uint8(frame, info.value_range))))
        z = reparam_numpy(mu, logvar, temperature[0] * eps) + offset
        want = to_uint8(model.decode(torch.from_numpy(z)).numpy(), info.value_range)
    assert got.dtype == np.uint8 and got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # a level at most, where float rounding sits on .5


def test_dcgan_decoder_every_precision(dcgan_checkpoint, tmp_path):
    results = export_precisions(dcgan_checkpoint, {p: tmp_path / f"g-{p}.onnx" for p in ("fp16", "bf16", "int8")})
    for precision, result in results.items():
        assert result.passed and _meta(result.path)["latentforge.kind"] == "dcgan"
        assert _meta(result.path)["latentforge.precision"] == precision


def test_gate_failure_writes_nothing_and_the_cli_writes_the_report(vae_checkpoint, tmp_path, capsys):
    out = tmp_path / "d.onnx"
    with pytest.raises(ParityError, match="nothing written") as err:
        export(vae_checkpoint, out, ExportOptions(precision="fp16", min_psnr=300.0))
    assert not out.exists() and os.listdir(tmp_path) == []
    report = err.value.result.report()
    assert report["passed"] is False and report["outputs"][0]["min_psnr"] == 300.0

    report_path = tmp_path / "parity.json"
    code = main(["export", str(vae_checkpoint), "-o", str(out), "--dtype", "int8", "--min-psnr", "300",
                 "--report", str(report_path)])
    assert code != 0 and not out.exists()
    assert json.loads(report_path.read_text())["passed"] is False
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "PSNR >= 300" in captured.err


def test_cli_exports_filter_and_prints_table(vae_checkpoint, tmp_path, capsys):
    out = tmp_path / "f.onnx"
    assert main(["export", str(vae_checkpoint), "-o", str(out), "--part", "filter", "--dtype", "fp16",
                 "--report", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    assert "frame_out[batch=16]" in printed and "onnxslim:" in printed and out.is_file()
    assert json.loads((tmp_path / "r.json").read_text())["part"] == "filter"


class Overflowing(nn.Module):
    """Activations near 1e6 between two layers, an image in [-1, 1] after: the fp16 failure VAEs hit."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(4, 32)
        self.down = nn.Linear(32, 16)
        with torch.no_grad():
            self.up.weight.mul_(1e6)
            self.down.weight.mul_(1e-6)

    def decode(self, z):
        return torch.tanh(self.down(torch.relu(self.up(z)))).view(-1, 1, 4, 4)


def test_fp16_overflow_is_detected_and_those_layers_stay_fp32(tmp_path):
    from onnxconverter_common import float16

    torch.manual_seed(0)
    source = Source(Overflowing().eval(), "foreign", 4, (4, 4, 1), (-1.0, 1.0))
    fp32 = export(source, tmp_path / "fp32.onnx", ExportOptions(slim=False)).path
    z = latents(16, 4)
    peaks = activation_peaks(onnx.load(str(fp32)), [{"z": z}])
    assert max(peaks.values()) > 65504  # the overflow is real ...
    naive = float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    naive_out = ort.InferenceSession(naive.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"z": z})[0]
    ref = source.model.decode(torch.from_numpy(z)).detach().numpy()
    assert compare("naive", ref, naive_out, atol=0.1, rtol=0).passed is False  # ... and breaks a plain conversion

    result = export(source, tmp_path / "fp16.onnx", ExportOptions(precision="fp16"))
    kept = result.details["fp32_kept_nodes"]
    assert kept and result.passed
    proto = onnx.load(str(result.path))
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
    inits = {i.name: i.data_type for i in proto.graph.initializer}
    assert all(inits[n.input[1]] == onnx.TensorProto.FLOAT for n in gemms if n.name in kept)
    assert all(p.max_abs < 0.1 for p in result.parity) and FP16_LIMIT < 65504


def test_prior_part_on_a_vae_is_a_clear_error(vae_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="VQ"):
        export(vae_checkpoint, tmp_path / "p.onnx", ExportOptions(part="prior"))
    assert list(tmp_path.iterdir()) == []


def test_encoder_of_a_generator_is_a_clear_error(dcgan_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="no.*encoder|has none"):
        export(dcgan_checkpoint, tmp_path / "e.onnx", ExportOptions(part="encoder"))


def test_int8_leaves_its_fp32_graph_alone_and_keeps_edge_layers_float(vae_checkpoint, tmp_path):
    from latentforge.export.pipeline import prepare
    from latentforge.export.precision import edge_layers, to_int8

    prepared = prepare(vae_checkpoint, ExportOptions())
    before = prepared.fp32.SerializeToString()
    quantized = to_int8(prepared.fp32, [prepared.part.make_inputs(8, 0)])
    assert prepared.fp32.SerializeToString() == before  # other variants are made from the same graph
    edges = edge_layers(prepared.fp32)
    ops = {n.name: n.op_type for n in prepared.fp32.graph.node}
    assert len(edges) == 2 and {ops[e] for e in edges} <= {"Gemm", "ConvTranspose"}
    # an edge layer's weight is not fed by a DequantizeLinear; the layers between are
    dequantized = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    weighted = [n for n in quantized.graph.node if n.op_type in ("Gemm", "ConvTranspose")]
    assert all((n.input[1] in dequantized) == (n.name not in edges) for n in weighted)
