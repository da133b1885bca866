"""VQ prior sampling speed: a code grid drawn token by token, then decoded; side by side in one run.

    python benchmarks/vq_sampling_bench.py benchmarks/results/models/faces_prior16.safetensors
    python benchmarks/vq_sampling_bench.py PRIOR_CKPT --repeats 1 --batch 1 --out /tmp/x   # a quick smoke run

Engines (all draw the same codes for a seed, the loop being NumPy's seeded PCG64, up to float near-ties: checked here):
  latentforge torch        load(ckpt, backend="torch"): the transformer with a growing key/value cache
  latentforge onnxruntime  load(ckpt, backend="onnxruntime"): the exported step graph over a fixed-size cache
  torch, no cache (naive)  the whole prefix through the transformer at every step, as a plain generate loop does
  onnxruntime, no cache    the full-sequence transformer exported as one graph, run on the prefix at every step
Each row is images/s and ms per image (median and p90 over repeats) for a batch, decoding included.
Writes benchmarks/results/vq-sampling-cpu-2core.{md,json}.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from latentforge import load
from latentforge.checkpoint import load_checkpoint
from latentforge.runtime.machine import machine_info
from latentforge.runtime.vq_sampling import sample_codes


def _full_sequence_session(transformer, threads: int):
    import onnxruntime as ort

    buffer = io.BytesIO()
    tokens = torch.zeros(2, 8, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(transformer.eval(), (tokens,), buffer, dynamo=False, input_names=["tokens"],
                          output_names=["logits"], dynamic_axes={"tokens": {0: "n", 1: "t"}}, opset_version=18)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def engines(path: str, threads: int) -> dict:
    module, _ = load_checkpoint(path)
    on_torch = load(path, backend="torch", threads=threads)
    on_ort = load(path, backend="onnxruntime", threads=threads)
    grid, k = on_torch.code_grid, on_torch.codebook_size
    session = _full_sequence_session(module.transformer, threads)

    def naive_torch(n, seed):
        def logits(tokens):
            with torch.inference_mode():
                return module.transformer(torch.from_numpy(tokens)).numpy()
        return on_torch.decode_codes(sample_codes(logits, n, grid, k, seed))

    def naive_ort(n, seed):
        codes = sample_codes(lambda tokens: session.run(None, {"tokens": tokens})[0], n, grid, k, seed)
        return on_torch.decode_codes(codes)

    return {"latentforge torch": lambda n, seed: on_torch.sample(n, seed=seed),
            "latentforge onnxruntime": lambda n, seed: on_ort.sample(n, seed=seed),
            "torch, no cache (naive)": naive_torch, "onnxruntime, no cache": naive_ort}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prior", help="a prior checkpoint (carries its VQ-VAE)")
    parser.add_argument("--batch", type=int, action="append", help="images per call (repeat; default 1 and 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-naive-above", type=int, default=16, help="naive engines only up to this batch")
    parser.add_argument("--out", default="benchmarks/results/vq-sampling-cpu-2core")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = args.batch or [1, 16]
    runners = engines(args.prior, args.threads)
    rows, reference = [], {}
    for batch in batches:
        for name, run in runners.items():
            if "naive" in name or "no cache" in name:
                if batch > args.skip_naive_above:
                    continue
            images = run(batch, 0)   # warm-up, and the images every engine must agree on
            reference.setdefault(batch, images)
            worst = int(np.abs(images.astype(int) - reference[batch]).max())
            times = []
            for r in range(args.repeats):
                start = time.perf_counter()
                run(batch, r + 1)
                times.append(time.perf_counter() - start)
            t = np.asarray(times)
            rows.append({"engine": name, "batch": batch, "images_per_s": batch / float(np.median(t)),
                         "ms_per_image_p50": 1e3 * float(np.median(t)) / batch,
                         "ms_per_image_p90": 1e3 * float(np.percentile(t, 90)) / batch,
                         "max_pixel_diff_vs_first_engine": worst, "repeats": args.repeats})
            print(f"{name:26s} batch {batch:3d}: {rows[-1]['images_per_s']:8.2f} images/s "
                  f"({rows[-1]['ms_per_image_p50']:.1f} ms/image)", file=sys.stderr)
    info = load(args.prior, backend="torch")
    report = {"machine": machine_info(), "prior": args.prior, "code_grid": info.code_grid,
              "codebook_size": info.codebook_size, "threads": args.threads, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [f"# VQ prior sampling, {info.code_grid}x{info.code_grid} codes of {info.codebook_size}, decode included",
             "", f"Machine: {m['cpu']} ({', '.join(m['features'])}), load average "
             f"{m['load_average_1min']:.2f} at the start; "
             f"{args.threads} thread(s); {args.repeats} repeats a row. "
             "Same seed on every engine; the last column is the largest pixel difference from the first engine's "
             "images "
             "(a few levels: the decoders' rounding; large: a draw whose uniform fell within float error of a code's "
             "CDF edge picked the neighbouring code, and that image's later codes followed a different path).",
             "", "| engine | batch | images/s | ms/image p50 | ms/image p90 | max pixel diff |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['engine']} | {r['batch']} | {r['images_per_s']:.2f} | {r['ms_per_image_p50']:.1f} | "
              f"{r['ms_per_image_p90']:.1f} | {r['max_pixel_diff_vs_first_engine']} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
