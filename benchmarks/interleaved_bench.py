"""latentforge's onnxruntime model against a default onnxruntime session on the same graph, call by call in turn.

    python benchmarks/interleaved_bench.py [--batch 128] [--calls 12] [--out benchmarks/results]

`latentforge bench` times each engine for a span, then the next; on a shared 2-core VM a span can land on a slow
minute, and at batch 128 (300 ms a call) a span is 5-7 calls. Taking the two in turn, one call each, puts every
slow minute on both. Writes interleaved-<machine kind>-dcgan64.md: medians, minimums and their ratio.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from tune_bench import dcgan64  # noqa: E402

import latentforge  # noqa: E402
from latentforge.export import export_onnx  # noqa: E402
from latentforge.files import atomic_write_bytes  # noqa: E402
from latentforge.runtime.machine import hardware, machine_info  # noqa: E402
from latentforge.runtime.ort_backend import import_onnxruntime  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--calls", type=int, default=12, help="timed calls of each, in turn")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    ort = import_onnxruntime()
    with tempfile.TemporaryDirectory() as scratch:
        onnx = export_onnx(dcgan64(Path(scratch)), Path(scratch) / "dcgan64.onnx").path
        model = latentforge.load(onnx, backend="onnxruntime")
        session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        z = np.random.default_rng(0).standard_normal((args.batch, 100)).astype(np.float32)
        engines = {"latentforge onnxruntime": lambda: model.decode_float(z),
                   "onnxruntime default": lambda: session.run(None, {name: z})}
        times: dict[str, list[float]] = {k: [] for k in engines}
        for run in engines.values():   # warm-up
            run(), run()
        for _ in range(args.calls):
            for label, run in engines.items():
                start = time.perf_counter()
                run()
                times[label].append(time.perf_counter() - start)
    machine = machine_info()
    p50 = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    low = {k: min(v) * 1e3 for k, v in times.items()}
    lines = [f"# Interleaved: latentforge onnxruntime vs a default onnxruntime session, DCGAN-64, batch {args.batch}", "",
             f"Machine: {hardware().summary()}; 1-min load {machine['load_average_1min']:.1f}; {machine['date']}.",
             f"{args.calls} timed calls of each, in turn, after 2 warm-up calls each.", "",
             "| engine | p50 ms | min ms |", "|---|---:|---:|"]
    lines += [f"| {k} | {p50[k]:.1f} | {low[k]:.1f} |" for k in engines]
    ratio = p50["onnxruntime default"] / p50["latentforge onnxruntime"]
    lines += ["", f"default session p50 / latentforge p50 = {ratio:.3f} (> 1: latentforge faster)"]
    out = Path(args.out) / f"interleaved-{hardware().kind}-dcgan64.md"
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
