"""The benchmark harness computes and reports correctly. Nothing here asserts a speed."""
import json

import numpy as np
import pytest
import torch

from latentforge.errors import InputError
from latentforge.models import DCGAN, ConvVAE, DCGANConfig, VAEConfig
from latentforge.runtime import engines
from latentforge.runtime.bench import BenchReport, run_bench, time_calls, time_in_turn
from latentforge.runtime.flops import count_flops_onnx, count_flops_torch
from latentforge.runtime.machine import Hardware, hardware

BATCHES = (1, 3)
BF16_PEERS = ["torch bf16 channels_last"] if hardware().bf16_units else []   # see test_bf16_peers_need_bf16_units
CHECKPOINT_ENGINES = ["latentforge auto", "latentforge onnxruntime", "latentforge torch", "onnxruntime default",
                      "torch eager", *BF16_PEERS, "openvino f32", *(["openvino bf16"] if BF16_PEERS else [])]


def broken_compile(fn):
    """Stands in for torch.compile: a real compile takes ~20 s, and this also exercises the failure path."""
    def run(z):
        raise RuntimeError("inductor needs a C++ compiler\nsecond line")
    return run


@pytest.fixture(scope="module")
def report(vae_checkpoint):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", broken_compile)
        return run_bench(vae_checkpoint, batches=BATCHES, min_time=0.01, warmup=1)


def test_a_checkpoint_gets_a_row_for_every_engine_and_batch(report):
    assert [(r.engine, r.batch) for r in report.rows] == [(e, b) for b in BATCHES for e in CHECKPOINT_ENGINES]


def test_a_failing_engine_is_skipped_with_its_first_error_line(report):
    assert report.skipped["torch.compile"] == "failed at batch 1: RuntimeError: inductor needs a C++ compiler"
    assert all(why == engines.NO_BF16_UNITS for name, why in report.skipped.items() if name != "torch.compile")


def test_rows_are_consistent(report):
    ceiling = report.ceilings["fp32"]["gflops"]
    flops = report.model["flops_per_image"]
    for r in report.rows:
        assert r.p50_ms <= r.p90_ms <= r.p99_ms and r.repeats >= 5   # percentiles in order; no time bound
        assert r.images_per_s == pytest.approx(r.batch / (r.p50_ms / 1e3))
        assert r.gflops == pytest.approx(flops * r.images_per_s / 1e9)
        assert r.pct_fp32_ceiling == pytest.approx(100 * r.gflops / ceiling)
    assert report.row("latentforge torch", 1).threads == str(torch.get_num_threads())


def test_report_carries_machine_model_and_ceilings(report, vae_checkpoint):
    assert report.model["path"] == str(vae_checkpoint) and report.model["format"] == "checkpoint"
    assert report.model["image_shape"] == [32, 32, 3] and report.model["latent_dim"] == 8
    assert report.ceilings["fp32"]["gflops"] > 0 and report.ceilings["fp32"]["library"] == "torch.mm"
    assert report.ceilings["bf16"]["dtype"] == "bfloat16"
    assert report.machine["physical_cores"] >= 1 and "numpy" in report.machine["versions"]
    assert report.settings == {"batches": list(BATCHES), "min_time": 0.01, "warmup": 1, "threads": None}


def test_table_names_what_is_counted_and_every_engine(report):
    table = report.table()
    assert "z in -> float32 image out" in table and "GFLOP/image" in table and "ceilings" in table
    for engine in CHECKPOINT_ENGINES:
        assert engine in table
    assert "skipped torch.compile: failed at batch 1" in table
    eager_rows = [line for line in table.splitlines() if line.startswith("torch eager")]
    assert len(eager_rows) == len(BATCHES) and all(" 1.00 " in line for line in eager_rows)  # the x-eager baseline


def test_json_round_trips(report):
    assert BenchReport.from_json(json.loads(json.dumps(report.to_json()))) == report


def test_an_onnx_gets_graph_rows_only(vae_onnx):
    onnx_report = run_bench(vae_onnx, batches=(2,), min_time=0.01, warmup=0)
    assert [r.engine for r in onnx_report.rows] == ["latentforge auto", "latentforge onnxruntime",
                                                    "onnxruntime default", "openvino f32", *(
                                                        ["openvino bf16"] if BF16_PEERS else [])]
    needs = {"latentforge torch", "torch eager", "torch bf16 channels_last", "torch.compile"}
    assert needs <= set(onnx_report.skipped)
    assert all("needs the checkpoint" in onnx_report.skipped[name] for name in needs)
    assert onnx_report.model["flops_source"] == "the ONNX graph's shapes"
    assert onnx_report.model["flops_per_image"] == 729_088


def test_flops_of_the_tiny_vae_by_hand(vae_checkpoint, vae_onnx):
    # widths (8, 16, 32), latent 8, 32 px RGB. MACs: Linear 8 -> 32*4*4 = 4096;
    # ConvTranspose k4 s2 scatters each input element to C_out*16 outputs:
    # 32->16 on 4x4: 16*32*16*16 = 131072; 16->8 on 8x8: 64*16*8*16 = 131072; 8->3 on 16x16: 256*8*3*16 = 98304.
    expected = 2 * (4096 + 131072 + 131072 + 98304)
    model = ConvVAE(VAEConfig(base_channels=8, latent_dim=8, image_size=32)).eval()
    assert count_flops_torch(model, 8) == expected == 729_088
    assert count_flops_onnx(vae_onnx) == expected
    assert count_flops_onnx(vae_onnx.read_bytes()) == expected


def test_flops_of_the_pytorch_examples_dcgan_generator():
    # PROTOCOLS.md: nz=100, ngf=64, 64x64x3 generator, 0.209 GFLOP per image.
    # MACs: 100*512*16 + 16*512*256*16 + 64*256*128*16 + 256*128*64*16 + 1024*64*3*16 = 104,628,224.
    assert count_flops_torch(DCGAN(DCGANConfig()).eval(), 100) == 2 * 104_628_224


def test_the_two_flop_counts_agree_on_a_gan(dcgan_checkpoint, dcgan_onnx):
    from latentforge.checkpoint import load_checkpoint

    model, info = load_checkpoint(dcgan_checkpoint)
    assert count_flops_onnx(dcgan_onnx) == count_flops_torch(model, info.config["latent_dim"]) > 0


def test_bad_settings(vae_onnx):
    for bad in ({"batches": ()}, {"batches": (1, 0)}, {"batches": (2.5,)}, {"min_time": 0}, {"warmup": -1},
                {"warmup": 0.5}):
        with pytest.raises(InputError):
            run_bench(vae_onnx, **bad)


def test_time_calls_repeats_at_least_five_times():
    calls = []
    times = time_calls(calls.append, 1, min_time=0.0)
    assert len(times) == len(calls) == 5 and times.dtype == np.float64


def test_time_in_turn_alternates_and_gives_each_its_budget():
    order = []
    runs = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    timed, failed = time_in_turn(runs, min_time=0.0, burst=0.0, min_repeats=4, settle=0.0)
    # a burst of >= 0 s is one call: the three take turns call by call, 4 rounds, 4 timings each
    assert failed == {} and order == ["a", "b", "c"] * 4
    assert {name: len(t) for name, t in timed.items()} == {"a": 4, "b": 4, "c": 4}


def test_time_in_turn_spreads_a_slow_stretch_over_every_engine():
    # a stand-in for load from another process: calls 40..99 of the whole run fall in a slow stretch, whoever
    # makes them. Taken in turn, two engines share it; span by span, it lands on one of them. Only the schedule
    # is asserted (which calls fell in the stretch), never a time.
    made = {"calls": 0}
    slow = {"x": 0, "y": 0}

    def work(label):
        made["calls"] += 1
        slow[label] += 40 <= made["calls"] < 100

    runs = {k: (lambda k=k: work(k)) for k in ("x", "y")}
    time_in_turn(runs, min_time=0.0, burst=0.0, min_repeats=60, settle=0.0)
    assert slow == {"x": 30, "y": 30}
    made["calls"], slow["x"], slow["y"] = 0, 0, 0
    for k in ("x", "y"):   # one engine's span after the other's
        time_in_turn({k: runs[k]}, min_time=0.0, burst=0.0, min_repeats=60, settle=0.0)
    assert slow == {"x": 21, "y": 39}


def test_time_in_turn_drops_a_failing_run_and_keeps_the_others():
    def broken():
        raise ValueError("boom")

    timed, failed = time_in_turn({"ok": lambda: None, "bad": broken}, min_time=0.0, min_repeats=3, settle=0.0)
    assert list(timed) == ["ok"] and len(timed["ok"]) >= 3
    assert isinstance(failed["bad"], ValueError)


EPYC = Hardware("AMD EPYC", frozenset({"avx2", "fma"}), 2)
XEON = Hardware("Intel Xeon", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"}), 2)


@pytest.mark.parametrize("facts", [EPYC, XEON], ids=["avx2", "amx"])
def test_engines_compute_the_same_image(vae_checkpoint, facts):
    # both hardware branches on any CPU: on one without bf16 units the bf16 peers run emulated, slowly but right
    found, skipped, model = engines.make_engines(vae_checkpoint, compile=False, facts=facts)
    no_units = {} if facts.bf16_units else {name: skipped.get(name, "") for name in
                                            ("torch bf16 channels_last", "openvino bf16")}
    assert all("no bf16 units" in why for why in no_units.values())
    assert skipped == {"torch.compile": "left out (compile=False)", **no_units}
    assert facts.bf16_units == any("bf16" in e.name for e in found)
    z = np.random.default_rng().standard_normal((2, model["latent_dim"]), dtype=np.float32)
    outputs = [np.asarray(e.run(e.prepare(z))) for e in found]
    for engine, out in zip(found, outputs):   # bf16 keeps 8 bits of mantissa: about 1e-2 after a few layers
        np.testing.assert_allclose(out, outputs[0], atol=3e-2 if "bf16" in engine.name else 1e-4, err_msg=engine.name)


def test_bf16_peers_need_bf16_units(vae_onnx):
    found, skipped, _ = engines.make_engines(vae_onnx, facts=EPYC)
    assert "openvino bf16" not in [e.name for e in found] and "no bf16 units" in skipped["openvino bf16"]
    found, skipped, _ = engines.make_engines(vae_onnx, facts=XEON)
    assert "openvino bf16" in [e.name for e in found] and "openvino bf16" not in skipped


def test_auto_against_the_best_peer(report):
    ratios = report.auto_vs_best_peer()
    assert set(ratios) == set(BATCHES)
    for batch, (peer, ratio) in ratios.items():
        peers = [r for r in report.rows if r.batch == batch and not r.engine.startswith("latentforge")]
        best = min(peers, key=lambda r: r.p50_ms)
        assert peer == best.engine and ratio == best.p50_ms / report.row("latentforge auto", batch).p50_ms
        assert f"auto / best peer at batch {batch}: {ratio:.2f} (best peer {peer}" in report.table()
    assert "latentforge auto ran torch fp32: no tuning record" in report.table()
