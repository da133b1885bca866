"""Fuzz latentforge.decompress with mutated .lfz streams: each case must decode to exactly the original symbols or
end in a one-line StreamError (any other outcome, or a case slower than --hang seconds, is a finding).

    python benchmarks/fuzz_codec.py [--cases 100000] [--out benchmarks/results]

Seeds: valid streams of the shipped faces codec (VAE points q1 and q5; the VQ prior, q6) and of a tiny
random VQ prior (a 4x4 code grid, so a stream that passes every header check decodes in milliseconds).
Mutations: byte flips, truncations, insertions, splices of two streams (plus a flip), random bytes; in a third of the cases
the CRC32 is recomputed after mutating, to reach the checks behind it (the shipped VQ seeds keep their
broken CRC: a full 256-step decode a case would not fit the run). Cases run in this process: a native crash
would end the run, so a completed run had none. Results: results/fuzz-codec.md and .json.
"""
from __future__ import annotations

import argparse
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_codec import _mutate, tiny_prior


class Hang(Exception):
    pass


def seeds() -> dict[str, tuple[object, bytes, np.ndarray]]:
    """name -> (model, stream, its symbols)."""
    import latentforge
    from latentforge.runtime.codec import compress, decompress_symbols
    from latentforge.runtime.codec_models import load_codec_model
    from latentforge.training.data import open_data

    faces = open_data("faces").get("test", np.arange(4))[0]
    out = {}
    for q, n in ((1, 1), (5, 4), (6, 1)):
        model, point = load_codec_model("faces", "torch", 1, quality=q)
        data = compress(model, faces[:n], point=point)
        out[f"faces-q{q}-x{n}"] = (model, data, decompress_symbols(data, model))
    tiny = latentforge.load(tiny_prior(Path(tempfile.mkdtemp()) / "tiny.safetensors", 0), backend="torch", threads=1)
    for n in (1, 3):
        x = np.random.default_rng(n).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        data = tiny.compress(x)
        out[f"tiny-vq-x{n}"] = (tiny, data, decompress_symbols(data, tiny))
    return out


def main() -> None:
    from latentforge.errors import StreamError
    from latentforge.files import write_report
    from latentforge.runtime.codec import decompress_symbols
    from latentforge.runtime.machine import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--hang", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    pool = seeds()
    names = sorted(pool)
    outcomes, findings, slowest, refusals = Counter(), [], [0.0, ""], Counter()

    def alarm(*_):
        raise Hang

    signal.signal(signal.SIGALRM, alarm)

    @settings(max_examples=args.cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(name=st.sampled_from(names), other=st.sampled_from(names),
           how=st.sampled_from(["flip", "truncate", "insert", "random", "splice"]), where=st.floats(0, 1),
           value=st.integers(0, 2 ** 32 - 1), fix=st.integers(0, 2))
    def case(name, other, how, where, value, fix):
        model, data, symbols = pool[name]
        at = int(where * (len(data) - 1))   # uniform over the stream: header, payload and CRC alike
        base = data[:at % len(data)] + pool[other][1][at % len(data):] if how == "splice" else data
        bad = _mutate(base, "flip" if how == "splice" else how, at, value, fix == 0 and not name.startswith("faces-q6"))
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, args.hang)
        try:
            got = decompress_symbols(bad, model)
            outcome = "decoded-exact" if got.shape == symbols.shape and np.array_equal(got, symbols) else "WRONG"
        except StreamError as e:
            outcome = "refused" if str(e) and "\n" not in str(e) else "BAD-MESSAGE"
            refusals[re.sub(r"\d+", "N", str(e).split(" (")[0])[:90]] += 1
        except Hang:
            outcome = "HANG"
        except Exception as e:  # noqa: BLE001 (anything but a StreamError is a finding, recorded with its input)
            outcome = f"OTHER {type(e).__name__}"
            findings.append({"seed": name, "how": how, "at": at, "value": value, "error": repr(e)[:300]})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        took = time.perf_counter() - start
        if took > slowest[0]:
            slowest[:] = [took, f"{name} {how} fix={fix == 0}"]
        outcomes[outcome] += 1
        if outcome in ("WRONG", "HANG", "BAD-MESSAGE"):
            findings.append({"seed": name, "how": how, "at": at, "value": value, "outcome": outcome})

    start = time.perf_counter()
    case()
    total = sum(outcomes.values())
    took = time.perf_counter() - start
    lines = [f"# Codec fuzz: {total} mutated .lfz streams", "",
             (f"`python benchmarks/fuzz_codec.py --cases {args.cases}`, {took:.0f} s, in one process (no native "
              "crash: the run completed)."), "", "| outcome | cases |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in outcomes.most_common()]
    lines += ["", f"Slowest case: {slowest[0] * 1000:.0f} ms ({slowest[1]}); hang bound {args.hang} s.", "",
              "Refusals by message (numbers as N):", ""]
    lines += [f"- {v} x {k}" for k, v in refusals.most_common(15)]
    lines += ["", f"Findings: {len(findings)}"] + [f"- {f}" for f in findings[:20]]
    report = {"cases": total, "outcomes": dict(outcomes), "findings": findings, "slowest_s": slowest[0],
              "refusals": dict(refusals.most_common(30)), "machine": machine_info()}
    write_report(args.out, "fuzz-codec", lines, report, str(report["machine"].get("cpu", "")))


if __name__ == "__main__":
    main()
