"""Fit the VAE codec's entropy tables (runtime/codec_latent.py) on training latents and write them beside the VAE.

    python benchmarks/codec_fit.py [--vae latentforge/weights/faces_vae.safetensors] [--n 8192]

Each quality's table is a per-dimension histogram (one pseudo-count a bin) of the encoder's mean latents
of `--n` training images, quantized with that quality's step; the steps were chosen by measurement
(docs/codec.md): below 0.2 the PSNR gain is < 0.1 dB per extra bit a dimension.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

STEPS = {1: 1.5, 2: 1.0, 3: 0.6, 4: 0.35, 5: 0.2}


def main() -> None:
    import torch
    from safetensors.numpy import save

    import latentforge
    from latentforge.files import atomic_write_bytes
    from latentforge.runtime.codec_latent import fit_table, tables_path
    from latentforge.training.data import open_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", default=str(Path(latentforge.__file__).parent / "weights" / "faces_vae.safetensors"))
    parser.add_argument("--n", type=int, default=8192)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = latentforge.load(args.vae, backend="torch", threads=1)
    data = open_data(model.info.data if hasattr(model, "info") else "faces")
    mu = np.concatenate([model.encode(data.get("train", np.arange(i, min(i + 512, args.n)))[0])[0]
                         for i in range(0, args.n, 512)])
    tables = {f"freq_q{q}": fit_table(mu, step) for q, step in STEPS.items()}
    for q, step in STEPS.items():
        freq = tables[f"freq_q{q}"]
        p = freq / freq.sum(1, keepdims=True)
        sym = np.clip(np.round(mu / step), -(freq.shape[1] // 2), freq.shape[1] // 2).astype(int) + freq.shape[1] // 2
        bits = -np.log2(p[np.arange(p.shape[0]), sym]).sum(1).mean()
        print(f"quality {q}: step {step}, {bits:.1f} bits an image on the fitting set")
    meta = {"latentforge.codec_steps": json.dumps({str(q): s for q, s in STEPS.items()}),
            "latentforge.codec_fit": f"benchmarks/codec_fit.py --n {args.n} on {args.vae}"}
    out = tables_path(Path(args.vae))
    atomic_write_bytes(out, save(tables, metadata=meta))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
