"""Decode speed of one model on every engine a user could pick, side by side in one run.

Engines: latentforge's own backends (what `load` gives, `auto` included) and the peers a user would
otherwise write by hand (runtime/engines.py). Each (engine, batch) is warmed up, then the engines are
timed in turn, in bursts (`BURST` seconds, at least one call, `SETTLE` seconds of untimed rest before each),
until each has `min_time` seconds of calls: a slow minute on a shared machine lands on every engine alike, not
on one engine's span.
The report gives median/p90/p99 latency, images/s, achieved GFLOP/s (FLOPs counted from the model),
its share of the fp32 matmul ceiling measured in the same run, and `auto / best peer` per batch.
"""
from __future__ import annotations

import gc
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from latentforge.errors import InputError
from latentforge.latents import latents

from .engines import COMPILE, EAGER, LATENTFORGE_AUTO, Engine, make_engines
from .machine import machine_info, matmul_ceiling

# Engines are timed in turn in bursts this long (at least one call each): long enough that an engine's weights are
# warm in cache within a burst, as in an app that calls one engine, short enough that load from other processes
# lands on all of them. Span by span (before, two spans per engine) the same onnxruntime session read 226-300 ms
# at batch 128 across rows of one run on a shared 2-core VM; taken call by call in turn it matched itself within 1 %.
# Without the rest between bursts (SETTLE), in 25 ms bursts, the engine after an onnxruntime session ran up to 1.9x
# slower: the session's intra-op threads spin after a call and took the cores from the next engine.
BURST = 0.1
SETTLE = 0.02   # seconds of rest between bursts, not timed
COUNTED = ("z in -> float32 image out, no uint8 conversion, inputs preallocated, fp32 weights, "
           "one call per timing")


@dataclass
class BenchRow:
    engine: str
    batch: int
    threads: str
    repeats: int
    first_call_ms: float  # includes torch.compile's compilation and any lazy session set-up
    p50_ms: float
    p90_ms: float
    p99_ms: float
    images_per_s: float
    gflops: float
    pct_fp32_ceiling: float


@dataclass
class BenchReport:
    model: dict            # path, format, kind, latent_dim, image_shape [H, W, C], flops_per_image, flops_source
    machine: dict
    ceilings: dict         # "fp32" (and "bf16" with torch): {dtype, n, gflops, library}
    settings: dict         # batches, min_time, warmup, threads
    rows: list[BenchRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # engine -> why it has no rows
    notes: list[str] = field(default_factory=list)

    def row(self, engine: str, batch: int) -> BenchRow | None:
        return next((r for r in self.rows if r.engine == engine and r.batch == batch), None)

    def auto_vs_best_peer(self) -> dict[int, tuple[str, float]]:
        """batch -> (fastest peer, its p50 / latentforge auto's p50): >= 1 means auto is at least as fast."""
        found = {}
        for batch in sorted({r.batch for r in self.rows}):
            auto = self.row(LATENTFORGE_AUTO, batch)
            peers = [r for r in self.rows if r.batch == batch and not r.engine.startswith("latentforge")]
            if auto and peers:
                best = min(peers, key=lambda r: r.p50_ms)
                found[batch] = (best.engine, best.p50_ms / auto.p50_ms)
        return found

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BenchReport:
        return cls(**{**data, "rows": [BenchRow(**r) for r in data["rows"]]})

    def table(self) -> str:
        m, mc, s = self.model, self.machine, self.settings
        h, w, c = m["image_shape"]
        ceilings = ", ".join(f"{k} {v['gflops']:.3g} GFLOP/s ({v['library']}, {v['n']}^2)"
                             for k, v in self.ceilings.items())
        lines = [
            f"latentforge bench: {m['path']} ({m['kind']} {m['format']}, z[{m['latent_dim']}] -> {h}x{w}x{c})",
            f"counted: {COUNTED}; per engine {s['warmup']} warm-up calls, then >= {s['min_time']:g} s of timed calls "
            f"taken in turn with the other engines, in bursts of >= {BURST * 1e3:g} ms (>= 1 call; {SETTLE * 1e3:g} ms "
            "untimed rest before each; a burst's first call not counted when it has more)",
            f"model: {m['flops_per_image'] / 1e9:.4f} GFLOP/image = 2 x MACs of Conv/ConvTranspose/Linear "
            f"(from {m['flops_source']}; elementwise ops not counted)",
            f"machine: {mc['cpu']}, {mc['physical_cores']} physical cores / {mc['logical_cpus']} logical, "
            f"features {' '.join(mc['features']) or 'none listed'}, 1-min load {mc['load_average_1min']:.1f}; "
            + ", ".join(f"{k} {v}" for k, v in mc["versions"].items()) + f"; {mc['date']}",
            f"ceilings (best square matmul, same run): {ceilings}; %fp32 is of the fp32 one, bf16 rows included",
            "x eager = torch eager's p50 / the row's p50 at the same batch (> 1 is faster); GFLOP/s and img/s at p50",
            "",
        ]
        header = ("engine", "threads", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "GFLOP/s", "%fp32",
                  "x eager", "runs", "1st ms")
        body = []
        for r in self.rows:
            base = self.row(EAGER, r.batch)
            ratio = f"{base.p50_ms / r.p50_ms:.2f}" if base else "-"
            body.append((r.engine, r.threads, str(r.batch), f"{r.p50_ms:.3f}", f"{r.p90_ms:.3f}", f"{r.p99_ms:.3f}",
                         f"{r.images_per_s:.0f}", f"{r.gflops:.1f}", f"{r.pct_fp32_ceiling:.1f}", ratio,
                         str(r.repeats), f"{r.first_call_ms:.1f}"))
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        for row in [header, *body]:
            lines.append("  ".join(cell.ljust(wd) if i == 0 else cell.rjust(wd)
                                   for i, (cell, wd) in enumerate(zip(row, widths))).rstrip())
        lines += [f"auto / best peer at batch {batch}: {ratio:.2f} (best peer {peer}; > 1: auto is faster)"
                  for batch, (peer, ratio) in self.auto_vs_best_peer().items()]
        if m.get("auto"):
            lines.append(f"latentforge auto ran {m['auto']}")
        lines += [f"skipped {engine}: {why}" for engine, why in self.skipped.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _check_batches(batches) -> tuple[int, ...]:
    batches = tuple(batches)
    if not batches or any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1 for b in batches):
        raise InputError(f"batches must be positive integers like (1, 16, 128), got {batches!r}")
    return tuple(int(b) for b in batches)


def time_calls(run: Callable, x, min_time: float, min_repeats: int = 5) -> np.ndarray:
    """Seconds per call of run(x), repeated until `min_time` has passed and at least `min_repeats` times.
    The garbage collector is paused, as timeit does, so a collection does not land in one sample."""
    times = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        deadline = time.perf_counter() + min_time
        while len(times) < min_repeats or time.perf_counter() < deadline:
            start = time.perf_counter_ns()
            run(x)
            times.append(time.perf_counter_ns() - start)
    finally:
        if was_enabled:
            gc.enable()
    return np.asarray(times, dtype=np.float64) / 1e9


def time_in_turn(runs: dict[str, Callable[[], object]], min_time: float, burst: float = BURST,
                 min_repeats: int = 5, settle: float = SETTLE) -> tuple[dict[str, np.ndarray], dict[str, Exception]]:
    """({label: seconds per call}, {label: the exception it raised}) for every run(), timed in turn.

    Each label gets a burst of calls (>= `burst` seconds, at least one call), then the next label, round after
    round, until every label has >= `min_time` seconds and >= `min_repeats` calls; `settle` seconds of untimed
    rest come before each burst that follows another label's. A run that raises is dropped from the rounds and
    reported. The garbage collector is paused, as timeit does."""
    times: dict[str, list[int]] = {label: [] for label in runs}
    spent = dict.fromkeys(runs, 0)
    failed: dict[str, Exception] = {}
    need = int(min_time * 1e9)
    previous = None
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        while True:
            active = [k for k in runs if k not in failed and (spent[k] < need or len(times[k]) < min_repeats)]
            if not active:
                break
            for label in active:
                if previous is not None and label != previous:
                    time.sleep(settle)   # the last engine's spinning thread pools go idle before this one starts
                previous = label
                run, end = runs[label], time.perf_counter_ns() + int(burst * 1e9)
                burst_times = []
                try:
                    while True:
                        start = time.perf_counter_ns()
                        run()
                        burst_times.append(time.perf_counter_ns() - start)
                        if time.perf_counter_ns() >= end:
                            break
                except Exception as e:  # noqa: BLE001  (the caller reports it; the others go on)
                    failed[label] = e
                    continue
                # the first call after a switch pays for the last engine's spinning threads and cold caches:
                # it is not counted when the burst has more calls
                kept = burst_times[1:] if len(burst_times) > 1 else burst_times
                times[label] += kept
                spent[label] += sum(kept)
    finally:
        if was_enabled:
            gc.enable()
    return {k: np.asarray(v, dtype=np.float64) / 1e9 for k, v in times.items() if k not in failed}, failed


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _measure_batch(engines: list[Engine], batch: int, z: np.ndarray, flops_per_image: int, ceiling: float,
                   min_time: float, warmup: int, skipped: dict[str, str]) -> list[BenchRow]:
    """Every engine's row at this batch: first call and warm-up one engine at a time, then all timed in turn.
    An engine that fails is removed from `engines` and named in `skipped`."""
    inputs, first = {}, {}
    for engine in list(engines):
        try:
            x = engine.prepare(z)
            start = time.perf_counter()
            engine.run(x)
            first[engine.name] = time.perf_counter() - start
            for _ in range(warmup):
                engine.run(x)
            inputs[engine.name] = x
        except Exception as e:  # a peer that cannot run this model is a finding, not a crash
            skipped[engine.name] = f"failed at batch {batch}: {type(e).__name__}: {_first_line(e)}"
            engines.remove(engine)
    runs = {e.name: (lambda e=e, x=inputs[e.name]: e.run(x)) for e in engines}
    timed, failed = time_in_turn(runs, min_time)
    for engine in list(engines):
        if engine.name in failed:
            err = failed[engine.name]
            skipped[engine.name] = f"failed at batch {batch}: {type(err).__name__}: {_first_line(err)}"
            engines.remove(engine)
    rows = []
    for engine in engines:
        times = timed[engine.name]
        p50, p90, p99 = np.percentile(times, [50, 90, 99])
        gflops = flops_per_image * batch / p50 / 1e9
        rows.append(BenchRow(engine.name, batch, engine.threads, len(times), first[engine.name] * 1e3, p50 * 1e3,
                             p90 * 1e3, p99 * 1e3, batch / p50, gflops, 100 * gflops / ceiling))
    return rows


def run_bench(path: str | os.PathLike, batches=(1, 16, 128), min_time: float = 1.0, warmup: int = 5,
              threads: int | None = None, compile: bool = True) -> BenchReport:
    """Benchmark decoding of the model at `path` (checkpoint or `.onnx`) on every available engine.

    `threads` goes to latentforge's backends (default: one per physical core); the peers run with
    their own defaults, as a user would. `compile=False` leaves torch.compile out (it compiles for
    ~20 s on 2 cores). An engine that fails is listed under `skipped` with its error.
    """
    batches = _check_batches(batches)
    if not min_time > 0:
        raise InputError(f"min_time must be > 0 seconds, got {min_time!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise InputError(f"warmup must be a whole number of calls >= 0, got {warmup!r}")

    machine = machine_info()  # before our own exports and matmuls add to the load average
    engines, skipped, model = make_engines(path, threads, compile)
    ceilings = {"fp32": matmul_ceiling("float32")}
    notes = []
    try:
        ceilings["bf16"] = matmul_ceiling("bfloat16")
    except (ImportError, ValueError, RuntimeError) as e:
        notes.append(f"no bf16 ceiling: {e}")
    if machine["load_average_1min"] > machine["logical_cpus"]:
        notes.append(f"1-min load average {machine['load_average_1min']:.1f} exceeded the {machine['logical_cpus']} "
                     "CPUs: other processes competed for the cores (torch's OpenMP pool suffers most); "
                     "not comparable with a run on an idle machine")
    report = BenchReport(model, machine, ceilings,
                         {"batches": list(batches), "min_time": min_time, "warmup": warmup, "threads": threads},
                         skipped=skipped, notes=notes)
    for batch in batches:
        z = latents(batch, model["latent_dim"], seed=0)
        report.rows += _measure_batch(engines, batch, z, model["flops_per_image"], ceilings["fp32"]["gflops"],
                                      min_time, warmup, report.skipped)
    compiled = [r for r in report.rows if r.engine == COMPILE]
    if compiled:
        report.notes.append(f"{COMPILE}: first call {compiled[0].first_call_ms / 1e3:.1f} s (compilation); "
                            "later batch sizes recompile once for a dynamic batch")
    return report
