"""Load + first image with a tuning record, for every kind of winner a record can hold.

    python benchmarks/load_bench.py [--out benchmarks/results] [--repeats 3]

For the shipped 64 px faces VAE, checkpoint and exported `.onnx`, in a scratch copy: a record is written whose
batch-1 winner is each engine in turn (onnxruntime and its session setups, OpenVINO f32/bf16, OpenVINO int8 by
NNCF, torch fp32/bf16 fused and plain, torch.compile, which compiles on the side while the plain module
answers), and one whose batch-128 winner is that engine while the
first call decodes 128 latents (a later winner, opened on that first call). Timed in this process with the
libraries already imported (a fresh interpreter adds `import torch`, ~1 s, to any checkpoint load): `load(path)`
then `decode` of the first batch; the median of `--repeats`. The records are written by hand, not measured: this
times loading, not which engine wins. Writes `load-<cpu>.md` and `.json` under --out.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import latentforge
from latentforge.demo import SHIPPED
from latentforge.export import export_onnx
from latentforge.files import atomic_write_bytes
from latentforge.latents import latents
from latentforge.runtime.loading import keep_compiled
from latentforge.runtime.machine import hardware, installed, machine_info
from latentforge.runtime.tune_record import TuneRecord, Winner, record_key, write_record

TARGET_MS = 200.0


def kinds(checkpoint: bool, bf16: bool) -> list[Winner]:
    found = [Winner("onnxruntime", "fp32", 0, 0), Winner("onnxruntime", "fp32", 0, 0, "1thread")]
    if installed("openvino"):
        found += [Winner("openvino", "fp32", 0, 0)] + ([Winner("openvino", "bf16", 0, 0)] if bf16 else [])
        if installed("nncf"):
            found.append(Winner("openvino", "int8", 0, 0, "nncf"))
    if checkpoint:
        found += [Winner("torch", "fp32", 0, 0)]
        if bf16:
            found += [Winner("torch", "bf16", 0, 0), Winner("torch", "bf16", 0, 0, "plain")]
        found.append(Winner("torch", "fp32", 0, 0, "compile"))
    return found


def timed(path: Path, batch: int, dim: int, repeats: int) -> tuple[float, float, str]:
    """(load ms, first decode ms, what ran the first call), medians of `repeats` fresh loads."""
    loads, firsts, ran = [], [], ""
    z = latents(batch, dim, seed=0)
    for _ in range(repeats):
        start = time.perf_counter()
        model = latentforge.load(path)
        loaded = time.perf_counter()
        model.decode(z)
        firsts.append((time.perf_counter() - loaded) * 1e3)
        loads.append((loaded - start) * 1e3)
        decoder = model._decoder
        decoder = decoder.for_batch(batch) if hasattr(decoder, "for_batch") else decoder
        ran = f"{decoder.name} {decoder.precision}"
        if getattr(decoder, "mode", "") == "compile":   # compiling on the side: done before the next row's clock
            ran += " (plain module; " + ("compiled after" if decoder.wait_compiled() else "compile failed") + ")"
    return float(np.median(loads)), float(np.median(firsts)), ran


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    facts = hardware()
    machine = machine_info()
    rows, data = [], []
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = Path(shutil.copy(SHIPPED, Path(scratch) / "faces_vae.safetensors"))
        onnx = export_onnx(checkpoint, Path(scratch) / "faces_vae.onnx").path
        for path in (onnx, checkpoint):
            model = latentforge.load(path, "onnxruntime")
            graph = None if path == onnx else model.onnx_source
            int8 = None
            if installed("nncf"):
                from latentforge.runtime.ov_int8 import quantize

                (Path(scratch) / path.suffix[1:]).mkdir()
                int8 = quantize(path if graph is None else graph, model.latent_dim, Path(scratch) / path.suffix[1:])
            for kind in kinds(path == checkpoint, facts.bf16_units):
                for batch, winners in ((1, {1: kind}), (128, {1: Winner("onnxruntime", "fp32", 0, 0), 128: kind})):
                    write_record(path, TuneRecord(record_key(path, facts), winners, 40.0), graph,
                                 int8 if kind.mode == "nncf" else None)
                    keep_compiled(path, None)   # as tune does: an OpenVINO winner's compiled model beside it
                    load_ms, first_ms, ran = timed(path, batch, model.latent_dim,
                                                      1 if kind.mode == "compile" else args.repeats)
                    total = load_ms + first_ms
                    rows.append(f"| {path.suffix} | {kind.label} | {batch} | {load_ms:.0f} | {first_ms:.0f} | "
                                f"{total:.0f} | {'yes' if total <= TARGET_MS else 'no'} | {ran} |")
                    data.append({"artifact": path.suffix, "winner": kind.label, "first_batch": batch,
                                 "load_ms": load_ms, "first_decode_ms": first_ms, "ran": ran})
                    print(rows[-1], file=sys.stderr)
    stem = f"load-{facts.kind}"
    lines = ["# Load + first image with a tuning record, per kind of winner: shipped 64 px faces VAE", "",
             f"Machine: {facts.summary()}; 1-min load average {machine['load_average_1min']:.1f} at the start, "
             f"{machine_info()['load_average_1min']:.1f} at the end (shared cores: noisy). Medians of "
             f"{args.repeats} loads in one process, libraries imported; target <= {TARGET_MS:.0f} ms.",
             "First batch 128: the record's batch-1 winner is onnxruntime and the engine below wins batch 128, so "
             "the first call opens it.", "",
             "| artifact | winner | first batch | load ms | first decode ms | total ms | <= 200 ms | first call ran |",
             "|---|---|---|---|---|---|---|---|", *rows]
    atomic_write_bytes(Path(args.out) / f"{stem}.md", ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(Path(args.out) / f"{stem}.json", json.dumps({"machine": machine, "rows": data}, indent=2,
                                                                    default=float).encode())
    print(f"wrote {Path(args.out) / stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
