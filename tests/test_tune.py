"""Hardware facts and every decision made from them (faked flags, so both CPU kinds' branches run here), the
PSNR gate, the tuning record and `auto` reading it, and `latentforge tune` end to end."""
import json
import shutil
import warnings

import numpy as np
import pytest

from latentforge import InputError, latents, load
from latentforge.cli import main
from latentforge.runtime import machine
from latentforge.runtime.backends import default_backend
from latentforge.runtime.machine import Hardware
from latentforge.runtime.tune import Candidate, candidates, gate, psnr_db
from latentforge.runtime.tune_record import (StaleRecordWarning, TuneRecord, Winner, beside, in_cache, record_key,
                                             write_record)

EPYC = Hardware("AMD EPYC 7B13", frozenset({"avx2", "fma"}), 2)
XEON = Hardware("Intel Xeon Platinum 8481C", frozenset({"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
                                                        "amx_bf16", "amx_int8", "amx_tile"}), 2)
H100 = Hardware("Intel Xeon", frozenset({"avx2", "fma"}), 8, ("NVIDIA H100 80GB HBM3",), (9, 0))


def test_hardware_reads_the_flags_and_cores_from_cpuinfo(tmp_path, monkeypatch):
    flags = "fpu avx2 fma avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(f"processor\t: {i}\nmodel name\t: Intel Xeon\nphysical id\t: 0\ncore id\t: {i // 2}\n"
                               f"flags\t\t: {flags}\n\n" for i in range(4)))
    monkeypatch.setattr(machine, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(machine, "NVIDIA_GPUS", str(tmp_path / "none" / "*"))
    machine._cpu_hardware.cache_clear()
    try:
        facts = machine.hardware()
    finally:
        machine._cpu_hardware.cache_clear()
    assert facts.cpu == "Intel Xeon" and facts.features == set(flags.split()) - {"fpu"}
    assert facts.physical_cores == min(2, len(machine.os.sched_getaffinity(0)))  # 4 logical CPUs, 2 cores
    assert facts.bf16_units and facts.int8_units and facts.amx and not facts.gpu


def test_capabilities_per_cpu_kind():
    assert not EPYC.bf16_units and not EPYC.int8_units and not EPYC.amx
    assert XEON.bf16_units and XEON.int8_units and XEON.amx
    zen4 = Hardware("AMD EPYC 9B14", frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}), 2)
    assert zen4.bf16_units and zen4.int8_units and not zen4.amx
    assert H100.gpu and "compute capability 9.0" in H100.summary() and "NVIDIA H100" in H100.summary()


def test_machine_kind_names_the_cpu_and_its_matrix_tier():
    # results files are named by it: two EPYCs with and without bf16 units must not overwrite each other's
    zen4 = Hardware("AMD EPYC 9B14", frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}), 2)
    assert (EPYC.kind, zen4.kind, XEON.kind) == ("amd-epyc-7b13-avx2", "amd-epyc-9b14-avx512bf16",
                                                 "intel-xeon-platinum-8481c-amx")


def test_default_backend_without_a_record_reads_the_hardware(tmp_path):
    ckpt, onnx = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    assert default_backend(ckpt, False, EPYC)[0] == "torch" and "onnxruntime would first export" in \
        default_backend(ckpt, False, EPYC)[1]
    backend, why = default_backend(ckpt, False, H100)
    assert backend == "torch" and "CUDA graphs" in why and "H100" in why
    assert default_backend(onnx, True, XEON)[0] == "onnxruntime" and "Intel Xeon" in default_backend(onnx, True,
                                                                                                      XEON)[1]
    assert default_backend(tmp_path / "m.plan", False, EPYC)[0] == "tensorrt"


@pytest.fixture
def own_checkpoint(vae_checkpoint, tmp_path):
    """A private copy: a record written beside it must not reach the session's shared fixtures."""
    return shutil.copy(vae_checkpoint, tmp_path / "vae.safetensors")


@pytest.fixture
def own_onnx(vae_onnx, tmp_path):
    return shutil.copy(vae_onnx, tmp_path / "vae.onnx")


def test_bf16_candidates_only_with_bf16_units(own_checkpoint, own_onnx):
    field = candidates(own_onnx, EPYC, 1)
    found, rejected = field.found, field.rejected
    assert [c.label for c in found] == ["onnxruntime fp32", "onnxruntime fp32 nospin", "openvino fp32"]
    assert "no bf16 units" in rejected["openvino bf16"]
    field = candidates(own_checkpoint, XEON, 1)
    found, rejected = field.found, field.rejected
    assert field.graph is not None   # exported once, for onnxruntime and OpenVINO alike
    labels = [c.label for c in found]
    assert labels[:6] == ["torch fp32", "torch bf16", "torch bf16 plain", "torch fp32 compile", "torch bf16 compile",
                          "onnxruntime fp32"] and "torch bf16" not in rejected
    # OpenVINO decides for itself: bf16 where this CPU really has the units, else it says it compiled f32
    assert "openvino bf16" in labels or "compiled fp32" in rejected["openvino bf16"]


def test_the_exporters_variants_are_candidates_and_gated(own_onnx, vae_checkpoint, vae_filter_onnx):
    from latentforge.export import ExportOptions, export

    export(vae_checkpoint, own_onnx.with_name("vae.int8.onnx"), ExportOptions(precision="int8"))
    field = candidates(own_onnx, EPYC, 1)
    assert {"onnxruntime int8", "openvino int8"} <= {c.label for c in field.found}
    passed = gate(field.found, field.reference, field.peak, field.latent_dim, 1.0, field.rejected)
    assert passed["onnxruntime fp32"] == float("inf") and 1.0 <= passed["onnxruntime int8"] < 100
    with pytest.raises(InputError, match="not a z -> image decoder"):
        candidates(vae_filter_onnx, EPYC, 1)


def test_psnr_gate_rejects_a_wrong_candidate_and_a_nan_one():
    def reference(z):
        return np.tanh(z[:, :, None, None] * np.ones((1, 1, 4, 4), np.float32))

    good = Candidate("onnxruntime", "fp32", reference)
    close = Candidate("openvino", "bf16", lambda z: reference(z) + np.float32(1e-3))
    wrong = Candidate("torch", "bf16", lambda z: reference(z) + np.float32(0.2))
    nan = Candidate("openvino", "fp32", lambda z: np.full_like(reference(z), np.nan))
    found, rejected = [good, close, wrong, nan], {}
    passed = gate(found, reference, 2.0, 3, 40.0, rejected)
    assert found == [good, close] and passed["onnxruntime fp32"] == float("inf")
    assert 40 < passed["openvino bf16"] < 80
    assert rejected["torch bf16"].startswith("PSNR 20.0 dB against fp32 < 40 dB")
    assert "PSNR -inf" in rejected["openvino fp32"]
    assert psnr_db(np.zeros(4), np.full(4, 0.1), 1.0) == pytest.approx(20.0)


def _record(path, winners, **key_changes):
    key = record_key(path)
    key = {**key, **key_changes, "libraries": {**key["libraries"], **key_changes.get("libraries", {})}}
    return TuneRecord(key, winners, 40.0, {b: {f"{w.backend} {w.precision}": w.p50_ms} for b, w in winners.items()},
                      {"torch bf16": "no bf16 units"}, 1.5)


def test_a_setup_must_beat_what_a_user_would_open_by_more_than_the_noise_margin():
    from latentforge.runtime.tune_timing import MARGIN, pick

    ort, one = "onnxruntime fp32", "onnxruntime fp32 1thread"
    assert pick({ort: 0.265, one: 0.260, "openvino fp32": 0.40}) == ort        # 2 % faster: noise, the default
    assert pick({ort: 0.265, one: 0.265 / (1 + 2 * MARGIN)}) == one               # clearly faster: kept
    assert pick({ort: 3.8, "openvino fp32": 4.7, "openvino int8 nncf": 2.7}) == "openvino int8 nncf"
    assert pick({ort: 0.30, "openvino fp32": 0.29, one: 0.28}) == "openvino fp32"  # the fastest incumbent
    assert pick({"torch fp32": 0.65, "torch bf16": 0.64}) == "torch bf16"          # no incumbent timed: fastest
    assert pick({"torch bf16 plain": 2.0, "torch bf16": 1.95}) == "torch bf16 plain"


def test_record_round_trip_beside_the_model_or_in_the_cache(own_onnx, tmp_path, monkeypatch):
    record = _record(own_onnx, {1: Winner("onnxruntime", "fp32", 0.2, float("inf")),
                                16: Winner("openvino", "bf16", 3.0, 61.5)})
    where = write_record(own_onnx, record)
    assert where == beside(own_onnx) == tmp_path / "vae.tune.json"
    assert TuneRecord.from_json(json.loads(where.read_text())) == record
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temp file left behind
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("latentforge.runtime.tune_record.writable", lambda folder: False)  # a read-only folder
    where = write_record(own_onnx, record)
    assert where == in_cache(own_onnx) and where.parent == tmp_path / "cache" / "latentforge" / "tune"
    assert TuneRecord.from_json(json.loads(where.read_text())).winner_for(100) == record.winners[16]
    assert record.winner_for(1) == record.winners[1] and record.winner_for(200) == record.winners[16]


def test_auto_runs_the_records_winner_per_batch(own_onnx):
    write_record(own_onnx, _record(own_onnx, {1: Winner("openvino", "fp32", 0.2, 150.0),
                                              8: Winner("onnxruntime", "fp32", 1.0, float("inf"))}))
    model = load(own_onnx)
    assert model.backend == "openvino" and model.chosen_because.startswith("tuning record for this machine")
    assert "batch 8: onnxruntime fp32" in model.chosen_because
    z = latents(8, model.latent_dim, seed=3)
    plain = load(own_onnx, "onnxruntime")
    assert plain.chosen_because == "backend='onnxruntime' was asked for"
    np.testing.assert_allclose(model.decode_float(z), plain.decode_float(z), atol=1e-5)   # routed to onnxruntime
    np.testing.assert_allclose(model.decode_float(z[:1]), plain.decode_float(z[:1]), atol=1e-4)  # to openvino
    assert model._decoder.for_batch(1).name == "openvino" and model._decoder.for_batch(9).name == "onnxruntime"


@pytest.mark.parametrize("change, needle", [({"cpu": "Intel Xeon Platinum 8481C"}, "cpu 'Intel Xeon Platinum"),
                                            ({"model_sha256": "0" * 64}, "model file changed"),
                                            ({"libraries": {"onnxruntime": "1.0.0"}}, "onnxruntime 1.0.0 there")])
def test_a_stale_record_is_refused_in_one_line(own_onnx, change, needle):
    write_record(own_onnx, _record(own_onnx, {1: Winner("openvino", "fp32", 0.2, 150.0)}, **change))
    with pytest.warns(StaleRecordWarning) as caught:
        model = load(own_onnx)
    message = str(caught[0].message)
    assert len(caught) == 1 and "\n" not in message and needle in message and "latentforge tune" in message
    assert model.backend == "onnxruntime" and model.chosen_because.startswith("no tuning record")


@pytest.mark.parametrize("text", ["{not json", "null", "[1, 2]",
                                  '{"format": 1, "key": {"libraries": []}, "min_psnr": 40, "winners": {"1": '
                                  '{"backend": "torch", "precision": "fp32", "p50_ms": 1, "psnr_db": 1}}}',
                                  '{"format": 1, "key": {}, "min_psnr": 40, "winners": {}}',
                                  '{"format": 1, "key": {}, "min_psnr": 40, "winners": {"1": {"backend": "x", '
                                  '"precision": "fp32", "p50_ms": 1, "psnr_db": 1}}}',
                                  '{"format": 1, "key": {}, "min_psnr": 40, "winners": {"1": {"backend": "torch", '
                                  '"precision": "fp32", "p50_ms": "fast", "psnr_db": 1}}}',
                                  '{"format": 1, "key": {}, "min_psnr": 40, "winners": {"1": {"backend": "torch", '
                                  '"precision": "fp32", "p50_ms": 1, "psnr_db": 1, "mode": "1thread"}}}'])
def test_an_unreadable_record_warns_and_loads_the_default(own_onnx, text):
    """Found by fuzzing (tests/fuzz_requests.py): `null` or key.libraries a list raised AttributeError, an empty
    winners ValueError from min(), a text p50 ValueError from the format string, all from load()."""
    beside(own_onnx).write_text(text)
    with pytest.warns(StaleRecordWarning, match="unreadable"):
        assert load(own_onnx).backend == "onnxruntime"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(own_onnx, "onnxruntime").backend == "onnxruntime"   # an explicit backend never reads it


def test_tune_from_the_cli_end_to_end(own_onnx, capsys):
    assert main(["tune", str(own_onnx), "--batch", "1,4", "--seconds", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "winner at batch 1:" in out and "winner at batch 4:" in out and str(beside(own_onnx)) in out
    record = TuneRecord.from_json(json.loads(beside(own_onnx).read_text()))
    assert set(record.winners) == {1, 4} and set(record.timings[1]) >= {"onnxruntime fp32", "openvino fp32"}
    model = load(own_onnx)
    assert model.chosen_because == record.because()
    assert main(["tune", str(own_onnx), "--min-psnr", "nan"]) == 2
    assert "min_psnr must be a finite number" in capsys.readouterr().err
    assert main(["tune", str(own_onnx), "--batch", "0"]) == 2


def test_a_checkpoints_record_keeps_its_graph_so_loading_skips_the_export(own_checkpoint):
    exported = load(own_checkpoint, "onnxruntime").onnx_source
    where = write_record(own_checkpoint, _record(own_checkpoint, {1: Winner("onnxruntime", "fp32", 0.2, 140.0)}),
                         graph=exported)
    graph = where.with_name("vae.tune.onnx")
    assert graph.read_bytes() == exported
    model = load(own_checkpoint)
    assert model.backend == "onnxruntime" and model.onnx_source == graph and model.has_encoder
    z = latents(2, model.latent_dim)
    np.testing.assert_allclose(model.decode_float(z), load(own_checkpoint, "torch").decode_float(z), atol=1e-4)
    assert load(own_checkpoint, verify=True).onnx_source == graph   # the kept graph is a file read back: verified
    import hashlib

    import onnx
    from onnx import numpy_helper

    from latentforge.errors import CheckpointError

    proto = onnx.load_from_string(exported)   # a damaged graph the record was (re)written for
    weights = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights.CopyFrom(numpy_helper.from_array(-3.0 * numpy_helper.to_array(weights), weights.name))
    graph.write_bytes(proto.SerializeToString())
    data = json.loads(where.read_text())
    data["graph_sha256"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    where.write_text(json.dumps(data))
    assert load(own_checkpoint).onnx_source == graph
    with pytest.raises(CheckpointError, match="does not reproduce its golden output at fp32"):
        load(own_checkpoint, verify=True)
    # external data out of the folder, hashed into the record: refused before any of it is read, as for any .onnx
    proto = onnx.load_from_string(exported)
    onnx.external_data_helper.convert_model_to_external_data(proto, location="../outside.bin", size_threshold=0)
    graph.write_bytes(proto.SerializeToString())
    data["graph_sha256"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    where.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="outside.bin.*not a file name inside the model's folder"):
        load(own_checkpoint)
    graph.write_bytes(exported + b"\0")   # not the graph the record names: exported again, not trusted
    assert isinstance(load(own_checkpoint).onnx_source, bytes)


def test_the_filter_is_tuned_kept_beside_the_record_and_run_by_filter(own_checkpoint, capsys):
    from latentforge import Filter
    from latentforge.runtime.tune import tune
    from latentforge.runtime.tune_record import filter_beside

    record, where = tune(own_checkpoint, (1,), seconds=1.0, compile=False)
    f = record.filter
    assert f is not None and f.psnr_db >= 40 and {"onnxruntime fp32", "onnxruntime fp32 1thread"} <= \
        set(record.timings["filter"]) and f.label in record.timings["filter"]
    assert TuneRecord.from_json(json.loads(where.read_text())).filter == f
    model = load(own_checkpoint)
    assert model.filter_choice[:3] == (f.backend, f.precision, f.mode) and f"filter: {f.label}" in model.chosen_because
    tuned = Filter(model, temperature=0.0)
    assert tuned.backend == f.backend and tuned._graph.source == filter_beside(where).read_bytes()
    plain = Filter(load(own_checkpoint, "torch"), temperature=0.0)
    frames = np.random.default_rng().integers(0, 256, (3, *model.image_shape), dtype=np.uint8)
    for frame in frames:   # fresh frames: the tuned engine gives the plain filter's frames (bf16 within its gate)
        got, want = tuned(frame).astype(np.float64), plain(frame).astype(np.float64)
        assert psnr_db(got, want, 255.0) >= 40
    filter_beside(where).write_bytes(b"not the graph")   # changed beside the record: exported again, not trusted
    model = load(own_checkpoint)
    assert model.filter_choice[4] is None and Filter(model).backend == f.backend


@pytest.mark.skipif(not machine.installed("nncf"), reason='NNCF is the optional extra "latentforge[openvino-int8]"')
def test_an_int8_filter_is_a_candidate_kept_beside_the_record_and_refused_when_changed(own_checkpoint, tmp_path):
    from latentforge import Filter
    from latentforge.runtime.tune_filter import tune_filter
    from latentforge.runtime.tune_record import filter_beside

    (tmp_path / "scratch").mkdir()
    rejected = {}
    winner, timings, graph, _ = tune_filter(load(own_checkpoint, "torch"), XEON, 1, 20.0, 0.3, rejected,
                                            tmp_path / "scratch")
    assert "openvino int8 nncf" in timings and graph is not None, rejected
    xml = tmp_path / "scratch" / "filter-int8.xml"
    record = _record(own_checkpoint, {1: Winner("torch", "fp32", 0.3, float("inf"))})
    record.filter = Winner("openvino", "int8", 0.2, 45.0, "nncf")
    where = write_record(own_checkpoint, record, filter_graph=xml)
    model = load(own_checkpoint)
    tuned, plain = Filter(model, temperature=0.0), Filter(load(own_checkpoint, "torch"), temperature=0.0)
    assert tuned.backend == "openvino" and tuned._graph.precision == "int8"
    frames = np.random.default_rng().integers(0, 256, (3, *model.image_shape), dtype=np.uint8)
    for frame in frames:
        assert psnr_db(tuned(frame).astype(np.float64), plain(frame).astype(np.float64), 255.0) >= 20
    _int8_filter_climbs_to_fp32(model, frames)
    filter_beside(where, int8=True).with_suffix(".bin").write_bytes(b"changed")
    with pytest.warns(StaleRecordWarning, match="its filter is not used"):
        model = load(own_checkpoint)
    assert model.filter_choice is None and Filter(model).backend == "onnxruntime"


def _int8_filter_climbs_to_fp32(model, frames):
    """The NaN guard over a tuned int8 filter IR, which has no variant files beside it: a frame it loses is
    recomputed on the fp32 graph the IR was quantized from (before, the guard found no higher precision and
    refused the frame)."""
    dim = model.latent_dim
    feeds = {"frame": frames, "offset": np.zeros((3, dim), np.float32), "temperature": np.zeros(1, np.float32),
             "eps": np.zeros((3, dim), np.float32)}
    int8 = model.filter_graph()
    frames_int8, finite = int8.run(feeds)
    assert list(finite) == [1, 1, 1]
    lost = type(int8)   # the IR losing frame 1 (an overflow int8 cannot show on this small model)
    int8.run = lambda f: [frames_int8, np.array([1, 0, 1], finite.dtype)] if len(f["frame"]) == 3 else lost.run(
        int8, f)
    before = model.nonfinite_recomputed
    out = model.run_filter(feeds)
    assert model.nonfinite_recomputed == before + 1
    np.testing.assert_array_equal(out[[0, 2]], frames_int8[[0, 2]])
    fp32 = model._filter_fp32()
    assert fp32.precision == "fp32"
    np.testing.assert_array_equal(out[1], fp32.run({k: v[1:2] if v.ndim and len(v) == 3 else v
                                                    for k, v in feeds.items()})[0][0])
    del int8.run


def test_torch_plain_and_compiled_candidates_follow_the_bf16_units(own_checkpoint):
    on_epyc = candidates(own_checkpoint, EPYC, 1)
    labels = [c.label for c in on_epyc.found]
    assert "torch fp32 compile" in labels and "torch bf16 plain" not in labels and "torch bf16 compile" not in labels
    assert "no bf16 units" in on_epyc.rejected["torch bf16 plain"] == on_epyc.rejected["torch bf16 compile"]


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile's tracing without inductor's C++ build (minutes on 2 cores): the plumbing is what is tested."""
    from latentforge.runtime import torch_backend

    monkeypatch.setattr(torch_backend, "COMPILE_BACKEND", "eager")


@pytest.mark.parametrize("mode", ["plain", "compile"])
def test_plain_and_compiled_torch_match_the_reference(vae_checkpoint, mode, eager_compile):
    import torch

    from latentforge.checkpoint import load_checkpoint
    from latentforge.runtime.torch_backend import TorchDecoder

    module, info = load_checkpoint(vae_checkpoint)
    z = latents(5, module.config.latent_dim)
    with torch.inference_mode():
        expected = module.decode(torch.from_numpy(z)).numpy()
    fp32 = TorchDecoder(load_checkpoint(vae_checkpoint)[0], 1, "fp32", value_range=info.value_range, mode=mode)
    np.testing.assert_allclose(fp32(z), expected, atol=1e-5)
    np.testing.assert_array_equal(fp32.images(z), load(vae_checkpoint, "torch").decode(z))
    bf16 = TorchDecoder(load_checkpoint(vae_checkpoint)[0], 1, "bf16", value_range=info.value_range, mode=mode)
    assert psnr_db(bf16(z), expected, 1.0) > 35
    assert fp32.mode == bf16.mode == mode


def test_a_plain_torch_winner_is_what_auto_loads(own_checkpoint, eager_compile):
    record = _record(own_checkpoint, {1: Winner("torch", "bf16", 0.3, 70.0, "plain"),
                                      8: Winner("torch", "fp32", 1.0, float("inf"), "compile")})
    assert TuneRecord.from_json(json.loads(write_record(own_checkpoint, record).read_text())) == record
    model = load(own_checkpoint)
    assert "batch 1: torch bf16 plain" in model.chosen_because and "batch 8: torch fp32 compile" in model.chosen_because
    assert model._decoder.for_batch(1).mode == "plain" and model._decoder.for_batch(8).mode == "compile"
    z = latents(8, model.latent_dim, seed=2)
    np.testing.assert_allclose(model.decode_float(z), load(own_checkpoint, "torch").decode_float(z), atol=1e-5)


@pytest.mark.parametrize("artifact", ["own_onnx", "own_checkpoint"])
def test_onnxruntime_session_setups_are_candidates_and_what_auto_loads(artifact, request):
    """The default session, one intra-op thread, no spinning: each timed, so the record never keeps a setup slower
    than the default session a user would open; the record's choice is the session `auto` opens."""
    path = request.getfixturevalue(artifact)
    field = candidates(path, EPYC, None)
    labels = [c.label for c in field.found]
    assert {"onnxruntime fp32", "onnxruntime fp32 1thread", "onnxruntime fp32 nospin"} <= set(labels)
    passed = gate(field.found, field.reference, field.peak, field.latent_dim, 60.0, field.rejected)
    assert passed["onnxruntime fp32 1thread"] >= 60 and passed["onnxruntime fp32 nospin"] >= 60
    write_record(path, _record(path, {1: Winner("onnxruntime", "fp32", 0.2, 99.0, "1thread"),
                                      8: Winner("onnxruntime", "fp32", 1.0, 99.0, "nospin")}), field.graph)
    model = load(path)
    one, spin = (model._decoder.for_batch(n).graph.session.get_session_options() for n in (1, 8))
    assert one.intra_op_num_threads == 1 and model.threads == 1
    assert spin.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    z = latents(9, model.latent_dim)
    np.testing.assert_allclose(model.decode_float(z), field.reference(z), atol=1e-4)
    np.testing.assert_allclose(model.decode_float(z[:1]), field.reference(z[:1]), atol=1e-4)


def test_a_later_winner_loads_on_its_first_call(own_onnx):
    from latentforge.runtime.model import Deferred

    write_record(own_onnx, _record(own_onnx, {1: Winner("onnxruntime", "fp32", 0.2, float("inf")),
                                              8: Winner("openvino", "fp32", 1.0, 150.0),
                                              64: Winner("openvino", "fp32", 9.0, 150.0)}))
    model = load(own_onnx)
    routed = model._decoder
    assert isinstance(routed.decoders[1], Deferred) and isinstance(routed.decoders[2], Deferred)
    z = latents(8, model.latent_dim)
    np.testing.assert_allclose(model.decode_float(z), load(own_onnx, "openvino").decode_float(z), atol=1e-4)
    assert routed.decoders[1].name == "openvino" and isinstance(routed.decoders[2], Deferred)
    assert routed.for_batch(64) is routed.decoders[1]   # one engine, opened once for both batch sizes
    assert model.backend == "onnxruntime"


def test_an_openvino_winner_imports_what_tune_compiled_and_refuses_a_changed_blob(own_onnx):
    pytest.importorskip("openvino")
    from latentforge.runtime.loading import keep_compiled

    where = write_record(own_onnx, _record(own_onnx, {1: Winner("openvino", "fp32", 0.2, 150.0)}))
    z = latents(3, 8)
    expected = load(own_onnx, "onnxruntime").decode_float(z)
    before = sorted(p.name for p in where.parent.iterdir())
    np.testing.assert_allclose(load(own_onnx).decode_float(z), expected, atol=1e-4)
    assert sorted(p.name for p in where.parent.iterdir()) == before   # load writes no file, blob or other
    keep_compiled(own_onnx, None)   # what tune does after writing its record
    blobs = sorted(where.parent.glob("vae.tune.ov-*.blob"))
    assert len(blobs) == 1 and blobs[0].with_name(blobs[0].name + ".sha256").is_file()
    model = load(own_onnx)
    assert model._decoder.graph.imported   # imported, not compiled
    np.testing.assert_allclose(model.decode_float(z), expected, atol=1e-4)
    data = bytearray(blobs[0].read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\x07" * 64   # OpenVINO would import this and run it wrong
    blobs[0].write_bytes(bytes(data))
    model = load(own_onnx)
    assert not model._decoder.graph.imported   # compiled, not imported
    np.testing.assert_allclose(model.decode_float(z), expected, atol=1e-4)
    assert blobs[0].read_bytes() == bytes(data)   # and load still wrote nothing
    keep_compiled(own_onnx, None)
    assert blobs[0].read_bytes() != bytes(data)   # the next tune keeps a good one again
    assert load(own_onnx, "openvino").backend == "openvino" and len(list(where.parent.glob("*.blob"))) == 1


def test_tune_keeps_an_openvino_winners_compiled_model_and_load_imports_it(own_onnx, monkeypatch):
    pytest.importorskip("openvino")
    from latentforge.runtime import tune as tuning

    monkeypatch.setattr(tuning, "pick", lambda timings: "openvino fp32")   # whatever this machine's timings say
    record, where = tuning.tune(own_onnx, batches=(2,), seconds=0.2, compile=False)
    assert record.winners[2].label == "openvino fp32"
    assert len(list(where.parent.glob("vae.tune.ov-*.blob"))) == 1
    assert load(own_onnx)._decoder.graph.imported


def test_an_openvino_filter_imports_what_tune_compiled(own_checkpoint):
    pytest.importorskip("openvino")
    from latentforge.checkpoint import read_info
    from latentforge.runtime.filter_graph import filter_graph_bytes
    from latentforge.runtime.loading import keep_compiled

    record = _record(own_checkpoint, {1: Winner("torch", "fp32", 0.3, float("inf"))})
    record.filter = Winner("openvino", "fp32", 0.3, 90.0)
    where = write_record(own_checkpoint, record, filter_graph=filter_graph_bytes(
        load(own_checkpoint, "torch")._encoder.module, read_info(own_checkpoint)))
    before = sorted(p.name for p in where.parent.iterdir())
    graph = load(own_checkpoint).filter_graph()
    assert graph.name == "openvino" and not graph.imported
    assert sorted(p.name for p in where.parent.iterdir()) == before   # load and the first frame write nothing
    keep_compiled(own_checkpoint, None)
    assert len(list(where.parent.glob(f"{own_checkpoint.stem}.tune.ov-*.blob"))) == 1
    assert load(own_checkpoint).filter_graph().imported


def test_a_compile_winner_compiles_on_the_side_while_the_plain_module_answers(own_checkpoint, eager_compile):
    write_record(own_checkpoint, _record(own_checkpoint, {1: Winner("torch", "fp32", 0.3, 90.0, "compile")}))
    model = load(own_checkpoint)
    decoder = model._decoder
    assert decoder.mode == "compile" and not decoder.wait_compiled(0)   # nothing compiles before a first call
    z = latents(2, model.latent_dim)
    expected = load(own_checkpoint, "torch").decode_float(z)
    np.testing.assert_allclose(model.decode_float(z), expected, atol=1e-5)   # answered, compiled or not
    assert decoder.wait_compiled(120)
    np.testing.assert_allclose(model.decode_float(z), expected, atol=1e-5)   # now the compiled code


def test_a_record_from_before_modes_loads_the_fused_ops(own_onnx):
    data = _record(own_onnx, {1: Winner("onnxruntime", "fp32", 0.2, float("inf"))}).to_json()
    del data["winners"]["1"]["mode"]
    assert TuneRecord.from_json(data).winners[1].mode == "fused"


def _overwrite_int8_weights(xml) -> None:
    """Overwrite the int8 weights of an OpenVINO IR in its .bin with 0x7f bytes, as a bad sector would; shapes, scales
    and indices stay as they are, so it still compiles and runs. (Zeros or negated weights would not do on the
    tiny test VAE: its image is ~0.5 everywhere whatever its middle layers say, and stays within int8's tolerance.)"""
    import xml.etree.ElementTree as ET

    data = bytearray(xml.with_suffix(".bin").read_bytes())
    damaged = 0
    for layer in ET.parse(xml).getroot().iter("layer"):
        attrs = layer.find("data").attrib if layer.get("type") == "Const" else {}
        if attrs.get("element_type") == "i8":
            start, end = int(attrs["offset"]), int(attrs["offset"]) + int(attrs["size"])
            data[start:end] = b"\x7f" * (end - start)
            damaged += 1
    assert damaged
    xml.with_suffix(".bin").write_bytes(bytes(data))


@pytest.mark.skipif(not machine.installed("nncf"), reason='NNCF is the optional extra "latentforge[openvino-int8]"')
def test_openvino_int8_by_nncf_is_gated_kept_beside_the_record_and_run_by_auto(own_onnx, tmp_path):
    from latentforge.errors import CheckpointError
    from latentforge.runtime.ov_int8 import ir_sha256
    from latentforge.runtime.tune_record import int8_beside

    (tmp_path / "scratch").mkdir()
    field = candidates(own_onnx, EPYC, 1, scratch=tmp_path / "scratch")
    int8 = next(c for c in field.found if c.label == "openvino int8 nncf")
    passed = gate(field.found, field.reference, field.peak, field.latent_dim, 20.0, field.rejected)
    assert 20.0 <= passed["openvino int8 nncf"] < 100   # really quantized: not bit-close to fp32
    record = _record(own_onnx, {1: Winner("openvino", "int8", 0.1, passed["openvino int8 nncf"], "nncf"),
                                8: Winner("onnxruntime", "fp32", 1.0, float("inf"))})
    where = write_record(own_onnx, record, int8=int8.run.graph.source)
    model = load(own_onnx)
    assert (model.backend, model.precision) == ("openvino", "int8")
    assert "batch 1: openvino int8 nncf" in model.chosen_because
    z = latents(9, model.latent_dim)
    expected = field.reference(z)
    assert psnr_db(model.decode_float(z[:1]), expected[:1], field.peak) >= 20.0   # the kept int8 IR
    np.testing.assert_allclose(model.decode_float(z), expected, atol=1e-4)         # batch 8+: onnxruntime fp32
    # The NaN guard climbs from the IR to the fp32 graph it was quantized from (no variant file lies beside an IR):
    # a stand-in NaN in row 0 of the IR's output, as an overflow would give
    int8_graph = model._decoder.for_batch(1).graph
    real_run = int8_graph.run
    int8_graph.run = lambda feeds, out=None: [np.where(np.arange(len(feeds["z"]))[:, None, None, None] == 0, np.nan,
                                                       real_run(feeds)[0])]
    fixed = model.decode_float(z[:2])
    np.testing.assert_allclose(fixed[0], expected[0], atol=1e-4)   # recomputed at fp32
    assert model.nonfinite_recomputed == 1 and np.array_equal(fixed[1], real_run({"z": z[:2]})[0][1])
    assert load(own_onnx, verify=True).precision == "int8"   # the IR reproduces the .onnx's golden output at int8
    # An IR that is damaged though its record was written for it (re-hashed): verify=True runs what will serve
    _overwrite_int8_weights(int8_beside(where))
    data = json.loads(where.read_text())
    data["int8_sha256"] = ir_sha256(int8_beside(where))
    where.write_text(json.dumps(data))
    assert load(own_onnx).precision == "int8"   # without verify it would serve
    with pytest.raises(CheckpointError, match=r"tune\.int8\.xml.* does not reproduce its golden output at int8: FAIL"):
        load(own_onnx, verify=True)
    int8_beside(where).with_suffix(".bin").write_bytes(b"changed")
    with pytest.warns(StaleRecordWarning, match="missing or changed"):
        assert load(own_onnx).precision == "fp32"


@pytest.mark.skipif(not machine.installed("openvino"), reason="OpenVINO comes with the README's install")
def test_the_filter_tries_openvino_bf16_only_where_the_flags_say_bf16_units(own_checkpoint):
    """The filter's hardware branch both ways on any CPU: faked flags decide whether the bf16 hint is tried."""
    from latentforge.runtime.tune_filter import tune_filter

    model = load(own_checkpoint, "torch")
    for facts, tried in ((EPYC, False), (XEON, True)):
        rejected = {}
        _, timings, _, _ = tune_filter(model, facts, 1, 20.0, 0.1, rejected, None)
        # timed under its engine label; refused (e.g. OpenVINO compiled f32 for the hint) under "filter ..."
        assert ("openvino bf16" in timings or "filter openvino bf16" in rejected) == tried, (facts.cpu, rejected)
        assert "onnxruntime fp32" in timings
