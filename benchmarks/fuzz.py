"""Long fuzz runs: every target of tests/fuzz_targets.py, up to --cases cases or --minutes each, in one worker
subprocess per run; writes results/fuzz.md and fuzz.json with the counts actually run.

    python benchmarks/fuzz.py [--cases 100000] [--minutes 10] [--targets checkpoint,onnx,...] [--jobs N] [--out DIR]
    python benchmarks/fuzz.py --merge DIR1 DIR2 ... --out DIR   # one report from runs of single targets

--merge reads each DIR/fuzz.json (a run of some targets, e.g. one target each in parallel) and writes one
fuzz.md/fuzz.json over all of them, with a total row; a target in more than one DIR is added up. A DIR may hold an
earlier merge's fuzz.json (e.g. benchmarks/results), so a new campaign adds to the committed counts.

--jobs N runs each target in N processes at once, each with its own worker and its own share of the cases
(Hypothesis draws differently in each); their counts and findings are added up.

Each case's outcome is one of: ok, refused (a latentforge.errors exception, one line), other (any other
exception), crash, hang, memory (see tests/fuzz_worker.py); anything but the first two, a refusal without a
one-line message, a file written, or an escaping ONNX path that loaded, is a finding, listed with its input.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_targets import TARGETS, build_seeds  # noqa: E402
from fuzz_worker import Worker, run_case  # noqa: E402

from latentforge.files import write_report  # noqa: E402
from latentforge.runtime.machine import machine_info  # noqa: E402


class TimeUp(Exception):
    pass


def fuzz(name: str, seeds: Path, root: Path, cases: int, seconds: float, worker: Worker) -> dict:
    target = TARGETS[name]
    outcomes, findings, peak, count = Counter(), {}, 0.0, [0]
    end = time.monotonic() + seconds

    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(seed=st.sampled_from(target.seeds), mutations=st.lists(target.mutation, min_size=1, max_size=4))
    def one(seed, mutations):
        nonlocal peak
        if time.monotonic() > end:
            raise TimeUp
        count[0] += 1
        answer = run_case(worker, name, seeds, root / f"{name}-{count[0]}", seed, mutations)
        shutil.rmtree(root / f"{name}-{count[0]}", ignore_errors=True)
        outcomes[answer["outcome"] if answer["problem"] is None or answer["outcome"] not in ("ok", "refused")
                 else "bad-" + answer["outcome"]] += 1
        peak = max(peak, answer.get("rss_mb", 0.0))
        if answer["problem"]:
            key = answer["problem"][:80]
            findings.setdefault(key, {"problem": answer["problem"], "seed": seed, "mutations": repr(mutations)[:600],
                                      "count": 0})["count"] += 1

    try:
        one()
    except TimeUp:
        pass
    return {"cases": count[0], "outcomes": dict(outcomes), "peak_rss_mb": round(peak, 1),
            "findings": list(findings.values())}


def _shard(name: str, seeds: Path, root: Path, cases: int, seconds: float, log: Path) -> dict:
    root.mkdir()
    worker = Worker(log=log)
    try:
        return fuzz(name, seeds, root, cases, seconds, worker)
    finally:
        worker.close()


def add_up(parts: list[dict]) -> dict:
    """Results of one target from several processes or runs: counts, outcomes and seconds added, findings merged
    by problem, peak memory the largest."""
    outcomes, findings = Counter(), {}
    for part in parts:
        outcomes.update(part["outcomes"])
        for f in part["findings"]:
            findings.setdefault(f["problem"][:80], {**f, "count": 0})["count"] += f["count"]
    return {"cases": sum(p["cases"] for p in parts), "outcomes": dict(outcomes),
            "peak_rss_mb": max(p["peak_rss_mb"] for p in parts), "findings": list(findings.values())}


def fuzz_jobs(name: str, seeds: Path, root: Path, cases: int, seconds: float, jobs: int, log: Path) -> dict:
    """`fuzz` in `jobs` processes, the cases shared out; the results added up (peak memory: the largest)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        return add_up(list(pool.map(_shard, [name] * jobs, [seeds] * jobs, [root / f"{name}-{i}" for i in range(jobs)],
                                    [-(-cases // jobs)] * jobs, [seconds] * jobs, [log] * jobs)))


COLUMNS = ("target", "cases run", "ok", "refused", "other exception", "crash", "hang", "memory", "other findings",
           "peak memory MB (worker RSS)", "s", "cases/s")


def _row(name: str, r: dict) -> str:
    o = r["outcomes"]
    bad = sum(v for k, v in o.items() if k.startswith("bad-"))
    return (f"| {name} | {r['cases']} | {o.get('ok', 0)} | {o.get('refused', 0)} | {o.get('other', 0)} | "
            f"{o.get('crash', 0)} | {o.get('hang', 0)} | {o.get('memory', 0)} | {bad} | {r['peak_rss_mb']} | "
            f"{r['seconds']} | {r['cases_per_s']} |")


def render(report: dict, asked: str) -> list[str]:
    """fuzz.md's lines: the table (one row per target and a total: cases, outcomes and seconds added, peak memory
    the largest), then every finding."""
    targets = report["targets"]
    total = add_up(list(targets.values()))
    total["seconds"] = round(sum(r["seconds"] for r in targets.values()), 1)
    total["cases_per_s"] = round(total["cases"] / max(total["seconds"], 1e-9), 1)
    lines = ["# Fuzzing the loaders", "", f"{asked}: the counts below are what actually ran.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += [_row(name, r) for name, r in targets.items()]
    lines.append(_row("**total**", total))
    lines += ["", "Findings of this run (none means every case loaded or was refused in one line); the bugs "
              "earlier runs found, and their fixes, are listed in docs/robustness.md (Bugs the fuzzing found).", ""]
    for name, r in targets.items():
        for f in r["findings"]:
            lines.append(f"- {name}: {f['count']}x {f['problem'][:200]} (seed {f['seed']}, {f['mutations'][:200]})")
    return lines


def _asked(cases, minutes, jobs) -> str:
    return (f"Asked for {cases} cases per target, stopped after {minutes} min per target, {jobs} job(s) per "
            "target")


def merge(folders: list[Path], out: Path) -> dict:
    """One report from the fuzz.json of each folder (see the module's note)."""
    import json

    runs, parts, machines = [], {}, []
    for folder in folders:
        where = Path(folder) / "fuzz.json"
        try:
            run = json.loads(where.read_text())
            targets = run["targets"]
            for name, r in targets.items():
                # a single run keeps these once at the top; an earlier merge keeps them per target, as lists
                r = {**r, **{k: tuple(r[k]) if isinstance(r.get(k), list) else (run[top],)
                             for k, top in (("cases_asked", "cases_asked"), ("minutes", "minutes_per_target"),
                                            ("jobs", "jobs"))}}
                r["cases"], r["seconds"], r["peak_rss_mb"], r["outcomes"] = \
                    int(r["cases"]), float(r["seconds"]), float(r["peak_rss_mb"]), dict(r["outcomes"])
                parts.setdefault(name, []).append(r)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise SystemExit(f"{where}: not a fuzz.py result ({type(e).__name__}: {e}); give folders that "
                             "benchmarks/fuzz.py --out wrote") from None
        runs.append(run)
        machines += run.get("machines", [run.get("machine", {})])   # an earlier merge: each of its runs
    if not parts:
        raise SystemExit("no targets in " + ", ".join(map(str, folders)))
    targets = {}
    for name, rs in parts.items():
        merged = add_up(rs)
        merged["seconds"] = round(sum(r["seconds"] for r in rs), 1)
        merged["cases_per_s"] = round(merged["cases"] / max(merged["seconds"], 1e-9), 1)
        merged.update({k: sorted({v for r in rs for v in r[k]}) for k in ("cases_asked", "minutes", "jobs")})
        targets[name] = merged

    def values(key: str) -> str:
        return "/".join(str(v) for v in sorted({v for r in targets.values() for v in r[key]}))

    same = {"cpu", "features", "physical_cores", "versions"}   # not the date or the load of each run
    report = {"machine": machines[0], "machines": machines, "merged_from": [str(f) for f in folders],
              "same_machine": all({k: m.get(k) for k in same} == {k: machines[0].get(k) for k in same}
                                  for m in machines), "targets": targets}
    lines = render(report, _asked(values("cases_asked"), values("minutes"), values("jobs")) +
                   f", merged from {len(machines)} runs" + ("" if report["same_machine"] else
                                                            " on different machines (see fuzz.json)"))
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, "fuzz", lines, report, report["machine"].get("cpu", ""))
    return report


def _build_ops() -> None:
    """Compile the fused ops (or find them compiled) before any case: a first-use compile takes 20-40 s on 2 busy
    cores, longer than a case's hang bound, and is not the loader's time."""
    from latentforge import ops
    from latentforge.errors import BackendUnavailable

    try:
        ops.build()
    except BackendUnavailable as e:
        print(f"fused ops unavailable ({e}); the torch backend runs its reference path", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=10.0, help="per target")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--jobs", type=int, default=1, help="processes per target, each with its own worker")
    parser.add_argument("--merge", nargs="+", metavar="DIR", help="merge these runs' fuzz.json instead of fuzzing")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if args.merge:
        merge([Path(d) for d in args.merge], Path(args.out))
        return
    report = {"machine": machine_info(), "cases_asked": args.cases, "minutes_per_target": args.minutes,
              "jobs": args.jobs, "targets": {}}
    _build_ops()
    with tempfile.TemporaryDirectory() as tmp:
        seeds, root = Path(tmp) / "seeds", Path(tmp) / "cases"
        seeds.mkdir(), root.mkdir()
        build_seeds(seeds)
        for name in args.targets.split(","):
            started = time.monotonic()   # a worker per target (and job): its peak memory is that target's
            result = fuzz_jobs(name, seeds, root, args.cases, args.minutes * 60, args.jobs, Path(tmp) / "worker.log")
            result["seconds"] = round(time.monotonic() - started, 1)
            result["cases_per_s"] = round(result["cases"] / max(result["seconds"], 1e-9), 1)
            report["targets"][name] = result
            print(name, result, flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_report(args.out, "fuzz", render(report, _asked(args.cases, args.minutes, args.jobs)), report,
                 report["machine"].get("cpu", ""))


if __name__ == "__main__":
    main()
