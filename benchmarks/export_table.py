"""Per model and precision: PSNR vs the fp32 PyTorch reference, file size, onnxruntime latency at batch 1 and 128.

    python benchmarks/export_table.py [--min-time 1.0] [--threads 2] [--out benchmarks/results]

Models: the shipped faces VAE (decoder, encoder, filter), a 64 px DCGAN generator (random
init, pytorch/examples size), and a foreign pytorch/examples-style netG (ngf 32) loaded
through `--arch dcgan-examples`. Every variant goes through the exporter's own gate; a
variant that fails it is listed as failing with the PSNR it reached. Latency: one
onnxruntime CPU session per file, inputs preallocated, median / p90 / p99 of repeated runs.
bf16 files are the fp32 graph marked for bf16 runtimes, so their onnxruntime latency is fp32's.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from latentforge.demo import SHIPPED
from latentforge.errors import ParityError
from latentforge.export.foreign import dcgan_examples_source
from latentforge.export.pipeline import ExportOptions, checkpoint_source, finish, prepare
from latentforge.export.source import Source
from latentforge.files import atomic_write_bytes
from latentforge.models.dcgan import DCGANConfig, DCGANGenerator, init_weights
from latentforge.runtime.bench import time_calls
from latentforge.runtime.machine import machine_info

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
BATCHES = (1, 128)


def dcgan_source(nz: int = 100, ngf: int = 64) -> DCGANGenerator:
    torch.manual_seed(0)
    g = DCGANGenerator(DCGANConfig(image_size=64, channels=3, latent_dim=nz, ngf=ngf))
    g.apply(init_weights)
    g.train()(torch.randn(64, nz))  # BatchNorm statistics of its own activations, as after training
    return g.eval()


class _Decoding(torch.nn.Module):
    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def decode(self, z):
        return self.generator(z)


def models(tmp: Path):
    faces = checkpoint_source(SHIPPED)
    for part in ("decoder", "encoder", "filter"):
        yield f"faces VAE {part}", faces, part
    yield "DCGAN 64px G (random init)", Source(_Decoding(dcgan_source()), "dcgan", 100, (64, 64, 3), (-1.0, 1.0)), \
        "decoder"
    net_g = tmp / "netG.pth"
    torch.save(dcgan_source(ngf=32).state_dict(), net_g)  # what pytorch/examples' dcgan saves
    yield "examples netG.pth ngf32 (foreign)", dcgan_examples_source(net_g), "decoder"


def latency(path: Path, part, batch: int, threads: int, min_time: float) -> dict:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = part.make_inputs(batch, 0)
    for _ in range(3):
        session.run(None, feed)
    times = time_calls(lambda f: session.run(None, f), feed, min_time) * 1e3
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "p99_ms": float(np.percentile(times, 99)), "runs": int(times.size)}


def run(min_time: float, threads: int) -> dict:
    torch.set_num_threads(threads)
    machine = machine_info()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, (label, source, part_name) in enumerate(models(tmp)):
            prepared = prepare(source, ExportOptions(part=part_name))
            for precision in PRECISIONS:
                out = tmp / f"{i}-{precision}.onnx"
                row = {"model": label, "part": part_name, "precision": precision}
                try:
                    result = finish(prepared, out, ExportOptions(part=part_name, precision=precision))
                    parity, row["gate"] = result.parity, "pass"
                except ParityError as e:
                    parity, row["gate"] = e.result.parity, "FAIL"
                row["psnr_db"] = min(p.psnr_db for p in parity)
                row["max_abs"] = max(p.max_abs for p in parity)
                if out.exists():
                    row["size_bytes"] = out.stat().st_size
                    row["kept_fp32"] = result.details["fp32_kept_nodes"]
                    for batch in BATCHES:
                        row[f"batch{batch}"] = latency(out, prepared.part, batch, threads, min_time)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    return {"machine": machine, "threads": threads, "min_time_s": min_time, "rows": rows}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Export precisions: quality, size, onnxruntime latency", "",
             f"Machine: {m['cpu']} ({m['physical_cores']} physical cores, features {', '.join(m['features']) or 'none'}),",
             f"{m['platform']}; {json.dumps(m['versions'])}; {m['date']}; load average (1 min) "
             f"{m['load_average_1min']:.2f} at the start; onnxruntime CPU, {report['threads']} threads.", "",
             "PSNR: the worst output of the exporter's own check against the fp32 PyTorch module (peak = the value "
             "range for images, 255 for the filter's bytes, 6 = the prior's +-3 sigma for encoder mu/logvar). "
             "Latency in ms, median / p90 / p99, inputs preallocated, output copies included. A bf16 file is the "
             "fp32 graph marked for bf16 runtimes, so its onnxruntime latency is fp32's. The random-init DCGANs draw "
             "nearly flat images, so their PSNRs say little; the faces VAE is the trained model.", "",
             "| model | precision | gate | PSNR dB | max abs | size KiB | batch 1 ms | batch 128 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        def cell(b):
            t = r.get(f"batch{b}")
            return "-" if t is None else f"{t['median_ms']:.3f} / {t['p90_ms']:.3f} / {t['p99_ms']:.3f}"

        size = f"{r['size_bytes'] / 1024:.0f}" if "size_bytes" in r else "-"
        lines.append(f"| {r['model']} | {r['precision']} | {r['gate']} | {r['psnr_db']:.1f} | {r['max_abs']:.3g} "
                     f"| {size} | {cell(1)} | {cell(128)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    report = run(args.min_time, args.threads)
    out = Path(args.out)
    atomic_write_bytes(out / "export-precisions.json", json.dumps(report, indent=2).encode())
    atomic_write_bytes(out / "export-precisions.md", markdown(report).encode())
    print(markdown(report))


if __name__ == "__main__":
    main()
