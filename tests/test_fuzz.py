"""Every loader fuzzed at CI size: each case loads, or is refused with a latentforge.errors exception in one
line; no other exception, crash, hang, runaway allocation or file written (tests/fuzz_worker.py judges).

CASES per target (default 1000, as the issue asks; environment LATENTFORGE_FUZZ_CASES): the file (11 targets) took
107 s of CPU, 212 s wall on a 2-core CPU shared with other jobs at load 5-7 (10 targets at 500 each: 60 s of CPU);
benchmarks/fuzz.py runs the same targets for far longer. Cases are derandomized, so a run is repeatable.
"""
import os

import pytest
from fuzz_targets import ESCAPES, TARGETS, build_seeds
from fuzz_worker import Worker, run_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CASES = int(os.environ.get("LATENTFORGE_FUZZ_CASES", "1000"))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeds")
    build_seeds(folder)
    return folder


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    worker = Worker(log=tmp_path_factory.mktemp("log") / "worker.log")
    yield worker
    worker.close()


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz(target, seeds, worker, tmp_path):
    count = [0]

    @settings(max_examples=CASES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.sampled_from(TARGETS[target].seeds),
           mutations=st.lists(TARGETS[target].mutation, min_size=1, max_size=4))
    def case(seed, mutations):
        count[0] += 1
        answer = run_case(worker, target, seeds, tmp_path / str(count[0]), seed, mutations)
        assert answer["problem"] is None, answer

    case()
    assert count[0] >= CASES   # every case asked for ran (Hypothesis may stop early on a small search space)


def _one(worker, seeds, tmp_path, target, seed, *mutations):
    return run_case(worker, target, seeds, tmp_path / "case", seed, list(mutations))


@pytest.mark.parametrize("mutation, match", [
    (("header_len", 10**9), "truncated"),
    (("overlap", 0, 1), "readable|damaged"),
    (("shift", 0, 4), "readable|damaged"),     # non-contiguous: a 4-byte gap before it, its length unchanged
    (("shift", 1, -4), "readable|damaged"),
    (("offsets", 0, [0, 10**12]), "readable|damaged"),
    (("dtype", 0, "F64"), "readable|damaged"),
    (("shape", 0, [3, 3, 3, 3, 3]), "readable|damaged"),
    (("duplicate", 0), "readable|damaged"),
    (("meta", "latentforge.config", "{not json"), "malformed"),
    (("meta", "latentforge.kind", "vae9"), "unknown model kind"),
    (("nonfinite", 0, b"\x00\x00\xc0\x7f"), "NaN or Inf"),
])
def test_checkpoint_cases_the_issue_names_are_refused(seeds, worker, tmp_path, mutation, match):
    import re

    answer = _one(worker, seeds, tmp_path, "checkpoint", "vae.safetensors", mutation)
    assert answer["outcome"] == "refused" and answer["type"] == "CheckpointError", answer
    assert re.search(match, answer["message"]), answer


@pytest.mark.parametrize("location", ESCAPES)
def test_onnx_external_data_out_of_the_folder_is_refused_before_reading(seeds, worker, tmp_path, location):
    answer = _one(worker, seeds, tmp_path, "onnx", "vae_ext.onnx", ("location", 0, location))
    assert answer["outcome"] == "refused" and "external" not in answer["type"], answer
    assert "keeps its data in" in answer["message"], answer


@pytest.mark.parametrize("mutation, match", [
    (("offset", 0, 10**9), "past the file"),
    (("length", 0, 10**9), "past the file"),
    (("length", 0, 4), "needs"),
    (("location", 0, "missing.bin"), "missing"),
])
def test_onnx_external_data_sizes_are_checked(seeds, worker, tmp_path, mutation, match):
    answer = _one(worker, seeds, tmp_path, "onnx", "vae_ext.onnx", mutation)
    assert answer["outcome"] == "refused" and match in answer["message"], answer


@pytest.mark.parametrize("name", ["../rgb.png", "/etc/hostname", "sub/../../rgb.png", "0.png\x00x"])
def test_labels_naming_a_file_outside_the_folder_are_refused(seeds, worker, tmp_path, name):
    answer = _one(worker, seeds, tmp_path, "labels", ".", ("cell", 1, 0, name))
    assert answer["outcome"] == "refused" and "not a file inside" in answer["message"], answer


@pytest.mark.parametrize("to, match", [
    ({"exp_avg": "opt0.1.exp_aSg"}, r"opt0\.1 holds \['exp_aSg', 'exp_avg_sq', 'step'\]"),   # the fuzz run's case
    ({k: f"opt0.-1.{k}" for k in ("step", "exp_avg", "exp_avg_sq")}, "names parameter -1 of"),   # from the end
    ({k: f"opt0.99.{k}" for k in ("step", "exp_avg", "exp_avg_sq")}, "names parameter 99 of"),   # torch: orphans
])
def test_a_training_state_with_a_renamed_moment_is_refused_at_load(seeds, worker, tmp_path, to, match):
    """A renamed moment loaded, and Adam's next step raised KeyError('exp_avg') (found by the 100k fuzz run: one
    byte of `opt0.1.exp_avg` flipped to `S`; fixed in training/state.py); moments of a parameter index outside the
    optimizer's list would have been kept aside by torch, that parameter's moments silently reset."""
    import re

    mutations = [("rename", f"opt0.1.{k}", name) for k, name in to.items()]
    answer = _one(worker, seeds, tmp_path, "state", "run/checkpoint.state.safetensors", *mutations)
    assert answer["outcome"] == "refused" and answer["type"] == "TrainingError", answer
    assert "does not fit" in answer["message"] and re.search(match, answer["message"]), answer


@pytest.mark.parametrize("target, seed, damage", [
    ("directions", "attrs.safetensors", [("offsets", 91, [131, 4]), ("offsets", 4, [131, 4])]),
    ("checkpoint", "dcgan.safetensors", [("meta_config", "latent_dim", []), ("shift", 927, -21)]),
])
def test_a_refusal_quoting_a_name_with_a_line_break_stays_one_line(seeds, worker, tmp_path, target, seed, damage):
    """The third fuzz campaign's cases: safetensors' header error names a tensor, there one renamed "ñ\\n" (or
    "\\n\\U00041611"), and the refusal quoted it as two lines. Every tensor is renamed with a line break here, as
    which one safetensors names is not fixed; every latentforge error now escapes line breaks."""
    renames = [("rename", i, f"t{i}\n") for i in range(300)]   # by position, modulo the tensor count: all of them
    answer = _one(worker, seeds, tmp_path, target, seed, *renames, *damage)
    assert answer["outcome"] == "refused" and answer["problem"] is None, answer
    assert "\\n`" in answer["message"] and len(answer["message"].splitlines()) == 1, answer


def test_every_error_message_is_one_line():
    from latentforge.errors import CheckpointError, one_line

    for brk in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029":   # every break str.splitlines() knows
        message = str(CheckpointError(f"bad name 'a{brk}b'"))
        assert len(message.splitlines()) == 1 and message == one_line(message) == "bad name 'a" + repr(brk)[1:-1] + "b'"


def test_the_seeds_load(seeds, worker, tmp_path):
    """The fuzz starts from files that load: a refusal of a mutant means the mutation, not a bad seed."""
    for target, spec in TARGETS.items():
        for seed in spec.seeds:
            answer = run_case(worker, target, seeds, tmp_path / f"{target}-{seed.replace('/', '-')}", seed, [])
            assert answer["outcome"] == "ok", (target, seed, answer)


def _fake_run(folder, targets: dict, cpu: str = "AMD EPYC") -> None:
    import json

    folder.mkdir()
    (folder / "fuzz.json").write_text(json.dumps({
        "machine": {"cpu": cpu, "date": str(folder)}, "cases_asked": 100000, "minutes_per_target": 60, "jobs": 1,
        "targets": {name: {"cases": cases, "outcomes": outcomes, "peak_rss_mb": peak, "seconds": seconds,
                           "cases_per_s": 0.0, "findings": findings}
                    for name, (cases, outcomes, peak, seconds, findings) in targets.items()}}))


def test_fuzz_results_of_separate_runs_merge_into_one_table(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    finding = {"problem": "ValueError: boom", "seed": "vae.onnx", "mutations": "[('flip', 3)]", "count": 2}
    _fake_run(tmp_path / "a", {"checkpoint": (100, {"ok": 10, "refused": 90}, 300.5, 10.0, []),
                               "onnx": (50, {"ok": 5, "refused": 43, "other": 2}, 500.0, 5.0, [finding])})
    _fake_run(tmp_path / "b", {"onnx": (30, {"refused": 29, "crash": 1}, 450.0, 3.0, [{**finding, "count": 1}]),
                               "image": (20, {"ok": 20}, 200.0, 2.0, [])})
    script = Path(__file__).parents[1] / "benchmarks" / "fuzz.py"
    done = subprocess.run([sys.executable, str(script), "--merge", str(tmp_path / "a"), str(tmp_path / "b"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {line.split(" | ")[0].strip("| *"): line.strip("|").split(" | ")
            for line in (tmp_path / "out" / "fuzz.md").read_text().splitlines() if line.startswith("| ")}
    header = [c.strip() for c in rows["target"]]
    assert header[:9] == ["target", "cases run", "ok", "refused", "other exception", "crash", "hang", "memory",
                          "other findings"] and "peak memory MB" in header[9]
    cell = {name: dict(zip(header, (c.strip() for c in row))) for name, row in rows.items()}
    assert cell["onnx"]["cases run"] == "80" and cell["onnx"]["crash"] == "1" and cell["onnx"]["s"] == "8.0"
    assert cell["onnx"][header[9]] == "500.0" and cell["onnx"]["other exception"] == "2"
    total = cell["total"]
    assert (total["cases run"], total["ok"], total["refused"], total["other exception"], total["crash"]) == \
        ("200", "35", "162", "2", "1")
    assert total[header[9]] == "500.0" and total["s"] == "20.0" and total["cases/s"] == "10.0"
    md = (tmp_path / "out" / "fuzz.md").read_text()
    assert "- onnx: 3x ValueError: boom" in md and "merged from 2 runs" in md
    merged = json.loads((tmp_path / "out" / "fuzz.json").read_text())
    assert list(merged["targets"]) == ["checkpoint", "onnx", "image"] and merged["same_machine"]
    _fake_run(tmp_path / "d", {"image": (5, {"refused": 5}, 100.0, 1.0, [])}, cpu="Intel Xeon")
    again = subprocess.run([sys.executable, str(script), "--merge", str(tmp_path / "out"), str(tmp_path / "d"),
                            "--out", str(tmp_path / "out2")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr   # a merge of a merge: a new campaign adds to the committed one
    merged2 = json.loads((tmp_path / "out2" / "fuzz.json").read_text())
    assert merged2["targets"]["image"]["cases"] == 25 and merged2["targets"]["onnx"]["cases"] == 80
    assert len(merged2["machines"]) == 3 and not merged2["same_machine"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "fuzz.json").write_text("{}")
    bad = subprocess.run([sys.executable, str(script), "--merge", str(tmp_path / "c"), "--out", str(tmp_path / "o2")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "not a fuzz.py result" in bad.stderr and not (tmp_path / "o2").exists()
