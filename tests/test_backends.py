"""Backends behind one load(): listing, auto choice, OpenVINO and IO-binding parity, precision variants,
TensorRT wiring (engine runs need a GPU), thread safety and the micro-batcher."""
import shutil
import sys
import threading
import time
import types

import numpy as np
import onnx
import pytest

import latentforge
from latentforge import BackendUnavailable, CheckpointError, InputError, latents, load
from latentforge.runtime.backends import backend_status, backends
from latentforge.runtime.openvino_backend import supports_bf16
from latentforge.runtime.batching import MicroBatcher
from latentforge.runtime.ort_backend import OrtGraph
from latentforge.runtime.protocols import BackendGraph


def test_backends_lists_every_backend_with_a_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without it, whatever this one has
    listed = {b.name: b for b in latentforge.backends()}
    assert list(listed) == ["onnxruntime", "openvino", "tensorrt", "torch"]
    for name, available, reason in backends():
        assert isinstance(available, bool) and reason
    assert listed["onnxruntime"].available and "CPUExecutionProvider" in listed["onnxruntime"].reason
    assert not listed["tensorrt"].available
    assert listed["tensorrt"].line() == 'tensorrt: unavailable — not installed — pip install "latentforge[tensorrt]"'


def test_gpu_providers_come_first_when_onnxruntime_gpu_has_them(monkeypatch):
    import onnxruntime

    from latentforge.runtime.ort_backend import providers

    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: every)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # TensorRT's libraries absent: its provider cannot start
    assert providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    assert providers() == every


def test_auto_picks_per_artifact(vae_onnx, vae_checkpoint, tmp_path, monkeypatch):
    assert load(vae_onnx).backend == "onnxruntime"
    assert load(vae_checkpoint).backend == "torch"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert load(vae_onnx).backend == "openvino"  # the next in the measured order
    monkeypatch.delitem(sys.modules, "onnxruntime")
    plan = tmp_path / "vae.plan"
    plan.write_bytes(b"not an engine")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "latentforge.runtime.engine_sidecar", _fake_sidecar_module())
    with pytest.raises(BackendUnavailable, match=r'pip install "latentforge\[tensorrt\]"'):
        load(plan)
    with pytest.raises(BackendUnavailable, match="runs only on backend='tensorrt'"):
        load(plan, backend="onnxruntime")


def _fake_sidecar_module():
    """Stands in for the exporter's runtime/engine_sidecar.py: check_engine(plan) -> the sidecar dict."""
    sidecar = {"format": "latentforge-tensorrt/1", "tensorrt_version": "10.9", "gpu_name": "NVIDIA H100",
               "compute_capability": "9.0", "flags": ["fp16"], "profile": {"min": [1, 8], "opt": [1, 8], "max": [64, 8]},
               "sha256": "0" * 64, "input": {"name": "z", "shape": [-1, 8], "dtype": "float32"},
               "output": {"name": "image", "shape": [-1, 3, 32, 32], "dtype": "float32"},
               "metadata": {"kind": "vae", "part": "decoder", "latent_dim": 8, "image_shape": [3, 32, 32],
                            "value_range": [0.0, 1.0]}}
    return types.SimpleNamespace(check_engine=lambda plan: sidecar)


def test_sidecar_metadata_reads_as_onnx_metadata(tmp_path):
    from latentforge.runtime.artifact import from_onnx_metadata
    from latentforge.runtime.trt_backend import sidecar_metadata

    info = from_onnx_metadata(sidecar_metadata(_fake_sidecar_module().check_engine(None)), tmp_path / "x.plan")
    assert (info.kind, info.latent_dim, info.image_shape, info.value_range) == ("vae", 8, (32, 32, 3), (0.0, 1.0))


@pytest.mark.skipif(not backend_status("tensorrt").available,
                    reason="TensorRT engines need the tensorrt package and a CUDA GPU; neither is on this machine")
def test_tensorrt_engine_matches_onnxruntime(vae_onnx, tmp_path, monkeypatch):
    import tensorrt as trt

    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(0)
    assert trt.OnnxParser(network, trt.Logger()).parse(vae_onnx.read_bytes())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("z", (1, 8), (4, 8), (16, 8))
    config.add_optimization_profile(profile)
    plan = tmp_path / "vae.plan"
    plan.write_bytes(builder.build_serialized_network(network, config))
    monkeypatch.setitem(sys.modules, "latentforge.runtime.engine_sidecar", _fake_sidecar_module())
    z = latents(4, 8)
    want = load(vae_onnx).decode_float(z)
    for cuda_graph in (False, True):
        model = load(plan)
        assert isinstance(model._decoder.graph, BackendGraph)
        model._decoder.graph.cuda_graph = cuda_graph
        np.testing.assert_allclose(model.decode_float(z), want, atol=1e-4)


def test_openvino_matches_onnxruntime(vae_onnx, vae_filter_onnx):
    z = latents(5, 8)
    np.testing.assert_allclose(load(vae_onnx, "openvino").decode_float(z), load(vae_onnx).decode_float(z),
                               atol=1e-5)
    frames = np.random.default_rng().integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    feeds = {"frame": frames, "offset": np.zeros((3, 8), np.float32), "temperature": np.ones(1, np.float32),
             "eps": latents(3, 8)}
    on_ov = load(vae_filter_onnx, "openvino").filter_graph().run(feeds)[0]
    on_ort = load(vae_filter_onnx).filter_graph().run(feeds)[0]
    assert np.abs(on_ov.astype(int) - on_ort).max() <= 1  # float rounding may flip a .5


def test_openvino_bf16_hint_reports_what_it_compiled(vae_onnx):
    model = load(vae_onnx, "openvino", precision="bf16")
    assert model.precision == ("bf16" if supports_bf16() else "fp32")
    assert model.decode(latents(2, 8)).shape == (2, 32, 32, 3)


def test_openvino_hint_reading_is_normalized_whatever_form_it_takes():
    """Both forms OpenVINO has returned for INFERENCE_PRECISION_HINT, checked on every machine."""
    ov = pytest.importorskip("openvino")
    from latentforge.runtime.openvino_backend import hint_name
    assert hint_name(ov.Type.bf16) == "bf16" and hint_name(ov.Type.f32) == "f32"
    assert str(ov.Type.bf16) != "bf16"  # why the short name is read, not str()
    assert hint_name("bf16") == "bf16" and hint_name("bfloat16") == "bf16" and hint_name("f32") == "f32"


def test_onnxruntime_keeps_its_own_thread_default_unless_a_count_is_asked_for(vae_filter_onnx):
    """Left unset, onnxruntime pins its intra-op threads to the cores; a count set explicitly turns that off."""
    assert OrtGraph(vae_filter_onnx).session.get_session_options().intra_op_num_threads == 0
    assert OrtGraph(vae_filter_onnx, threads=1).session.get_session_options().intra_op_num_threads == 1
    assert OrtGraph(vae_filter_onnx, mode="1thread").threads == 1


def test_io_binding_fills_the_callers_buffer(vae_filter_onnx):
    graph = OrtGraph(vae_filter_onnx, threads=1)
    frames = np.random.default_rng().integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    feeds = {"frame": frames, "offset": latents(2, 8), "temperature": np.ones(1, np.float32), "eps": latents(2, 8)}
    buffer = np.empty((2, 32, 32, 3), np.uint8)
    for _ in range(2):  # the second call reuses the thread's binding and the same buffer
        got = graph.run(feeds, out=buffer)[0]
        assert got is buffer
        np.testing.assert_array_equal(buffer, graph.run(feeds)[0])


def test_precision_loads_the_exporters_variant(vae_onnx, tmp_path):
    onnx_path = tmp_path / "vae.onnx"
    shutil.copy(vae_onnx, onnx_path)
    with pytest.raises(CheckpointError, match=r"latentforge export CHECKPOINT --precision fp16 -o .*vae\.fp16\.onnx"):
        load(onnx_path, precision="fp16")
    shutil.copy(vae_onnx, tmp_path / "vae.fp16.onnx")  # named fp16 but its metadata says nothing of it
    with pytest.raises(CheckpointError, match="metadata says latentforge.precision='fp32'"):
        load(onnx_path, precision="fp16")
    proto = onnx.load(vae_onnx)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "latentforge.precision", "fp16"
    onnx.save(proto, tmp_path / "vae.fp16.onnx")
    model = load(onnx_path, precision="fp16")
    assert model.precision == "fp16" and model.decode(latents(1, 8)).shape == (1, 32, 32, 3)
    with pytest.raises(InputError, match="precision must be one of"):
        load(onnx_path, precision="fp8")
    with pytest.raises(CheckpointError, match=r"--precision int8 -o .*vae\.int8\.onnx"):
        load(onnx_path, "openvino", precision="int8")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_many_threads_get_the_sequential_results(backend, vae_onnx, vae_checkpoint):
    model = load(vae_checkpoint if backend == "torch" else vae_onnx, backend)
    inputs = [latents(1 + i % 3, 8, seed=i) for i in range(24)]
    want = [model.decode(z) for z in inputs]
    got = [None] * len(inputs)
    start = threading.Barrier(8)

    def work(k):
        start.wait()
        for i in range(k, len(inputs), 8):
            got[i] = model.decode(inputs[i])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_micro_batcher_gathers_concurrent_calls(vae_onnx):
    model = load(vae_onnx)
    sizes = []

    def decode(z):
        sizes.append(len(z))
        return model.decode(z)

    inputs = [latents(1, 8, seed=i) for i in range(12)]
    results = [None] * 12
    with MicroBatcher(decode, max_batch=8, max_wait_ms=200) as batcher:
        start = threading.Barrier(12)

        def call(i):
            start.wait()
            results[i] = batcher(inputs[i])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(sizes) == 12 and max(sizes) <= 8 and len(sizes) < 12  # gathered, never above max_batch
    assert batcher.requests == 12
    for r, z in zip(results, inputs):
        np.testing.assert_array_equal(r, model.decode(z))


def test_micro_batcher_routes_errors_to_their_caller(vae_onnx):
    model = load(vae_onnx)
    good, bad = latents(2, 8), np.full((1, 8), np.nan, np.float32)
    with MicroBatcher(model.decode, max_batch=16, max_wait_ms=100) as batcher:
        futures = [batcher.submit(good), batcher.submit(bad), batcher.submit(good)]
        np.testing.assert_array_equal(futures[0].result(), model.decode(good))
        with pytest.raises(InputError, match="is nan"):
            futures[1].result()
        np.testing.assert_array_equal(futures[2].result(), model.decode(good))


def test_micro_batcher_drains_on_close_then_refuses():
    def slow_double(x):
        time.sleep(0.01)
        return x * 2

    batcher = MicroBatcher(slow_double, max_batch=2, max_wait_ms=0)
    futures = [batcher.submit(np.array([i])) for i in range(7)]
    batcher.close()
    assert [int(f.result()[0]) for f in futures] == [2 * i for i in range(7)]
    assert not batcher._worker.is_alive()
    with pytest.raises(InputError, match="closed"):
        batcher.submit(np.array([1]))
    with pytest.raises(InputError, match="max_batch"):
        MicroBatcher(slow_double, max_batch=0)
