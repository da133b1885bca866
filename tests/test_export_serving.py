"""Triton model folders, TensorRT engines and their sidecars, and the fp32 graph in a second runtime (OpenVINO)."""
import hashlib
import importlib.util
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from latentforge.errors import BackendUnavailable, CheckpointError, InputError
from latentforge.export.parts import build_part
from latentforge.export.pipeline import ExportOptions, checkpoint_source, export
from latentforge.export.tensorrt import Engine, profile_shapes
from latentforge.latents import latents
from latentforge.runtime.engine_sidecar import FORMAT, read_sidecar, sidecar_path, verify_engine

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
NO_TENSORRT = 'needs TensorRT and a CUDA GPU: pip install "latentforge[tensorrt]" on an NVIDIA machine'


def _triton_config(path):
    model_config_pb2 = pytest.importorskip(
        "tritonclient.grpc.model_config_pb2", reason='needs tritonclient: pip install "latentforge[triton]"')
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_triton_repository_for_the_decoder(vae_checkpoint, tmp_path):
    folder = tmp_path / "faces_vae"
    export(vae_checkpoint, folder, ExportOptions(format="triton", precision="fp16", fp16_io=True, batch=(1, 8, 64)))
    config = _triton_config(folder / "config.pbtxt")
    from tritonclient.grpc import model_config_pb2

    assert config.input[0].data_type == config.output[0].data_type == model_config_pb2.TYPE_FP16  # --fp16-io
    assert config.name == "faces_vae" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 64
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 64]
    assert config.instance_group[0].count == 1
    assert [(i.name, list(i.dims)) for i in config.input] == [("z", [8])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("image", [3, 32, 32])]
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    image = session.run(None, {"z": latents(2, 8).astype(np.float16)})[0]
    assert image.shape == (2, 3, 32, 32) and image.dtype == np.float16
    with pytest.raises(InputError, match="already exists"):
        export(vae_checkpoint, folder, ExportOptions(format="triton"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces_vae"]  # no half-built folder left beside it


def test_triton_repository_for_the_filter_has_explicit_batch(vae_checkpoint, tmp_path):
    folder = tmp_path / "filter"
    export(vae_checkpoint, folder, ExportOptions(format="triton", part="filter"))
    config = _triton_config(folder / "config.pbtxt")
    # temperature [1] has no batch dimension, so Triton's implicit batching cannot apply
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    dims = {i.name: list(i.dims) for i in config.input}
    assert dims == {"frame": [-1, 32, 32, 3], "offset": [-1, 8], "temperature": [1], "eps": [-1, 8]}
    types = {t.name: t.data_type for t in [*config.input, *config.output]}
    from tritonclient.grpc import model_config_pb2

    assert types["frame"] == types["frame_out"] == model_config_pb2.TYPE_UINT8


def test_tensorrt_profile_shapes(vae_checkpoint):
    part = build_part(checkpoint_source(vae_checkpoint), "filter")
    shapes = profile_shapes(part, (1, 4, 32))
    assert shapes["frame"] == ((1, 32, 32, 3), (4, 32, 32, 3), (32, 32, 32, 3))
    assert shapes["temperature"] == ((1,), (1,), (1,))


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here; the build test below runs instead")
def test_tensorrt_missing_names_the_extra_and_writes_nothing(vae_checkpoint, tmp_path):
    with pytest.raises(BackendUnavailable, match=r"latentforge\[tensorrt\]"):
        export(vae_checkpoint, tmp_path / "d.plan", ExportOptions(format="tensorrt", precision="fp16"))
    assert list(tmp_path.iterdir()) == []


def test_tensorrt_bf16_is_refused_before_any_work(vae_checkpoint, tmp_path):
    with pytest.raises(InputError, match="fp32, fp16 or int8"):
        export(vae_checkpoint, tmp_path / "d.plan", ExportOptions(format="tensorrt", precision="bf16"))
    with pytest.raises(InputError, match="fp32, fp16 or int8"):
        export(vae_checkpoint, tmp_path / "m", ExportOptions(format="triton", triton_backend="tensorrt",
                                                             precision="bf16"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not HAS_TENSORRT, reason=NO_TENSORRT)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_builds_matches_and_verifies(vae_checkpoint, tmp_path, precision):
    import tensorrt as trt

    plan = tmp_path / "d.plan"
    result = export(vae_checkpoint, plan, ExportOptions(format="tensorrt", precision=precision, batch=(1, 4, 16)),
                    timing_cache=tmp_path / "timing.cache")
    assert result.passed and (tmp_path / "timing.cache").is_file()
    sidecar = verify_engine(plan, trt.__version__, torch.cuda.get_device_name(),
                            "%d.%d" % torch.cuda.get_device_capability())
    assert sidecar["profile"] == {"min": 1, "opt": 4, "max": 16} and sidecar["metadata"]["precision"] == precision
    assert "STRONGLY_TYPED" in sidecar["flags"] and sidecar["input"]["name"] == "z"


def _fake_engine(tmp_path, **changes):
    plan = b"not really a plan, but bytes with a hash"
    sidecar = {"format": FORMAT, "tensorrt_version": "10.9.0", "gpu_name": "NVIDIA H100 80GB HBM3",
               "compute_capability": "9.0", "flags": ["STRONGLY_TYPED"], "profile": {"min": 1, "opt": 16, "max": 128},
               "sha256": hashlib.sha256(plan).hexdigest(),
               "input": {"name": "z", "shape": [-1, 8], "dtype": "float32"},
               "output": {"name": "image", "shape": [-1, 3, 32, 32], "dtype": "float32"},
               "metadata": {"kind": "vae", "part": "decoder", "precision": "fp16"}}
    sidecar.update(changes)
    path = tmp_path / "m.plan"
    Engine(plan, sidecar).write(path)
    return path


def test_sidecar_accepts_the_machine_it_was_built_on(tmp_path):
    path = _fake_engine(tmp_path)
    assert sidecar_path(path).name == "m.plan.json"
    sidecar = verify_engine(path, "10.9.0", "NVIDIA H100 80GB HBM3", "9.0")
    assert sidecar["metadata"]["precision"] == "fp16" and read_sidecar(path) == sidecar


@pytest.mark.parametrize("machine, error, match", [
    (("10.10.0", "NVIDIA H100 80GB HBM3", "9.0"), BackendUnavailable, "built by TensorRT 10.9.0"),
    (("10.9.0", "NVIDIA A100-SXM4-40GB", "8.0"), BackendUnavailable, "built for NVIDIA H100"),
])
def test_sidecar_refuses_another_tensorrt_or_gpu(tmp_path, machine, error, match):
    with pytest.raises(error, match=match):
        verify_engine(_fake_engine(tmp_path), *machine)


def test_sidecar_refuses_changed_bytes_and_bad_sidecars(tmp_path):
    path = _fake_engine(tmp_path)
    path.write_bytes(path.read_bytes() + b"!")
    with pytest.raises(CheckpointError, match="sha256"):
        verify_engine(path, "10.9.0", "NVIDIA H100 80GB HBM3", "9.0")
    sidecar_path(path).write_text(json.dumps({"format": FORMAT}))
    with pytest.raises(CheckpointError, match="lacks tensorrt_version"):
        read_sidecar(path)
    sidecar_path(path).write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_sidecar(path)
    sidecar_path(path).unlink()
    with pytest.raises(CheckpointError, match="no sidecar"):
        read_sidecar(path)
    (tmp_path / "other").mkdir()
    other = _fake_engine(tmp_path / "other", format="someone-else/2")
    with pytest.raises(CheckpointError, match="format"):
        read_sidecar(other)


@pytest.mark.parametrize("part", ["decoder", "filter"])
def test_fp32_graph_runs_the_same_in_openvino(vae_checkpoint, tmp_path, part):
    ov = pytest.importorskip("openvino", reason="OpenVINO is the second runtime of the portability check")
    out = export(vae_checkpoint, tmp_path / f"{part}.onnx", ExportOptions(part=part)).path
    compiled = ov.Core().compile_model(str(out), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    part_spec = build_part(checkpoint_source(vae_checkpoint), part)
    feed = part_spec.make_inputs(3, None)
    got = compiled(feed)
    name = part_spec.outputs[0]
    ref = part_spec.reference(feed)[name]
    value = got[compiled.output(name)]
    assert value.dtype == ref.dtype
    if part == "filter":
        assert np.abs(value.astype(int) - ref.astype(int)).max() <= 1
    else:
        np.testing.assert_allclose(value, ref, atol=1e-5, rtol=1e-4)


def test_bf16_gate_runs_on_openvino_where_it_computes_bf16(vae_checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="OpenVINO is the bf16 runtime of this check")
    import latentforge.export.pipeline as pipeline

    # Where the CPU has no bf16 units OpenVINO computes the bf16 request in fp32; the path is the same.
    monkeypatch.setattr(pipeline, "openvino_has_bf16", lambda: True)
    result = export(vae_checkpoint, tmp_path / "d.onnx", ExportOptions(part="filter", precision="bf16"))
    assert result.passed and result.details["measured_by"].startswith("OpenVINO")
    monkeypatch.setattr(pipeline, "openvino_has_bf16", lambda: False)
    result = export(vae_checkpoint, tmp_path / "e.onnx", ExportOptions(precision="bf16"))
    assert result.passed and result.details["measured_by"].startswith("bf16 emulation")
