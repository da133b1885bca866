import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from latentforge.checkpoint import load_checkpoint, save_checkpoint
from latentforge.errors import CheckpointError, InputError, ParityError
from latentforge.export import compare, export_onnx
from latentforge.latents import latents
from latentforge.models import DCGAN, ConvVAE, DCGANConfig, VAEConfig


@pytest.fixture(scope="module", params=["vae", "dcgan"])
def checkpoint(request, tmp_path_factory):
    torch.manual_seed(0)
    if request.param == "vae":
        model = ConvVAE(VAEConfig(image_size=32, latent_dim=6, base_channels=8))
    else:
        model = DCGAN(DCGANConfig(image_size=32, channels=1, latent_dim=10, ngf=8, ndf=8))
        model.generator.train()(torch.randn(8, 10))  # non-trivial BatchNorm statistics
    path = tmp_path_factory.mktemp(request.param) / "checkpoint.safetensors"
    save_checkpoint(path, model.eval(), data="faces", step=1)
    return path


def test_export_writes_a_dynamic_batch_graph_with_metadata(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    result = export_onnx(checkpoint, out)
    assert result.passed and result.path == out and len(result.parity) == 3   # batches 1, 16 and the golden check
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    model, info = load_checkpoint(checkpoint)
    assert meta["latentforge.kind"] == info.kind
    assert int(meta["latentforge.latent_dim"]) == info.config["latent_dim"]
    assert json.loads(meta["latentforge.image_shape"]) == [32, 32, info.config["channels"]]  # (H, W, C)
    assert meta["latentforge.image_layout"] == "HWC"
    assert json.loads(meta["latentforge.value_range"]) == list(info.value_range)
    assert meta["latentforge.data"] == "faces" and "latentforge.version" in meta
    assert [i.name for i in proto.graph.input] == ["z"] and [o.name for o in proto.graph.output] == ["image"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 3, 33):  # sizes the export's own check did not use
        z = latents(n, info.config["latent_dim"])
        with torch.inference_mode():
            ref = model.decode(torch.from_numpy(z)).numpy()
        np.testing.assert_allclose(session.run(None, {"z": z})[0], ref, atol=1e-5, rtol=1e-4)


def test_parity_failure_writes_nothing(checkpoint, tmp_path, monkeypatch):
    from dataclasses import replace

    import latentforge.export.pipeline as pipeline
    from latentforge.export.graph import Decode

    real = pipeline.export_graph

    def corrupted(part, *args, **kwargs):
        model = part.module.model
        with torch.no_grad():  # export a model that differs from the checkpoint's
            broken = type(model)(model.config)
        return real(replace(part, module=Decode(broken)), *args, **kwargs)

    monkeypatch.setattr(pipeline, "export_graph", corrupted)
    out = tmp_path / "model.onnx"
    with pytest.raises(ParityError, match="nothing written") as err:
        export_onnx(checkpoint, out)
    assert not out.exists() and os.listdir(tmp_path) == []
    assert "max abs" in str(err.value) and "\n" not in str(err.value)
    report = err.value.result.report()
    assert report["passed"] is False and report["outputs"][0]["worst_index"]


def test_export_keeps_an_existing_file_when_it_fails(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(InputError):
        export_onnx(checkpoint, out, opset=3)
    assert out.read_bytes() == b"previous"


def test_export_bad_inputs(tmp_path, checkpoint):
    with pytest.raises(CheckpointError, match="does not exist"):
        export_onnx(tmp_path / "missing.safetensors", tmp_path / "a.onnx")
    with pytest.raises(InputError, match="does not exist"):
        export_onnx(checkpoint, tmp_path / "no" / "such" / "a.onnx")
    assert list(tmp_path.iterdir()) == []


def test_compare_reports_worst_index_and_nonfinite():
    ref = np.zeros((2, 3), np.float32)
    got = ref.copy()
    got[1, 2] = 0.5
    p = compare("x", ref, got, atol=1e-3, rtol=0)
    assert not p.passed and p.worst_index == [1, 2] and p.max_abs == 0.5
    got[0, 0] = np.nan
    p = compare("x", ref, got, atol=10, rtol=0)
    assert not p.passed and p.nonfinite == 1
    assert compare("x", ref, ref + 1e-6, atol=1e-5, rtol=0).passed


def test_image_shape_metadata_is_hwc_and_files_exported_before_in_chw_still_load(tmp_path):
    from latentforge.runtime.artifact import from_onnx_metadata

    meta = {"latentforge.kind": "vae", "latentforge.latent_dim": "8", "latentforge.value_range": "[0, 1]"}
    now = from_onnx_metadata({**meta, "latentforge.image_shape": "[32, 24, 3]", "latentforge.image_layout": "HWC"},
                             tmp_path / "now.onnx")
    before = from_onnx_metadata({**meta, "latentforge.image_shape": "[3, 32, 24]"}, tmp_path / "before.onnx")
    assert now.image_shape == before.image_shape == (32, 24, 3)
