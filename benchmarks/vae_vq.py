"""VAE vs β-VAE vs VQ-VAE (+ prior) on held-out faces: bounds, reconstruction, MIG, codebook use, FD; pictures.

    python benchmarks/vae_vq.py --vae latentforge/weights/faces_vae.safetensors \
        --vae benchmarks/results/models/faces_beta4.safetensors \
        --prior benchmarks/results/models/faces_prior16.safetensors

Writes benchmarks/results/vae_vq/{vae_vq.md, vae_vq.json, *_samples.png, *_recon.png}.
FD is "FD (domain features)" (not FID): the Fréchet distance between sample sets in the
64-d features of a readout CNN trained on the faces labels (training/evaluate/readout.py). The
data-vs-data row (held-out faces vs other training faces) is the floor at this sample size.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from latentforge.checkpoint import load_checkpoint
from latentforge.files import write_report
from latentforge.images import from_uint8, save_grid, to_uint8
from latentforge.latents import latents
from latentforge.runtime.machine import machine_info
from latentforge.training.evaluate import vae as eval_vae
from latentforge.training.evaluate import vq as eval_vq
from latentforge.training.data import open_data
from latentforge.training.evaluate.readout import frechet_distance, readout_for


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@torch.inference_mode()
def recon_pairs(decode_encode, images: np.ndarray, value_range) -> np.ndarray:
    x = torch.from_numpy(from_uint8(images, value_range))
    out = to_uint8(decode_encode(x).numpy(), value_range)
    return np.stack([images, out], 1).reshape(-1, *images.shape[1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", action="append", default=[], help="faces VAE checkpoint (repeat)")
    parser.add_argument("--prior", required=True, help="faces prior checkpoint (carries its VQ-VAE)")
    parser.add_argument("-n", type=int, default=1000, help="held-out faces and samples per FD")
    parser.add_argument("--k", type=int, default=64, help="importance samples for IWAE")
    parser.add_argument("--out", default="benchmarks/results/vae_vq")
    parser.add_argument("--readout-steps", type=int, help="train a readout this long (default: the shipped one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    faces = open_data("faces")
    readout, score = readout_for(faces, args.readout_steps)
    held, _ = faces.get("test", np.arange(args.n))
    held_features = readout.features(held)
    other, _ = faces.get("train", np.arange(10**6, 10**6 + args.n))
    report = {"machine": machine_info(), "n": args.n, "readout_r2": score, "models": {}}
    rows = {"data (other training faces)": {"FD vs held-out": frechet_distance(readout.features(other), held_features)}}
    for path in args.vae:
        model, info = load_checkpoint(path)
        beta = json.loads(info.extra.get("train", "{}")).get("beta", 1.0)
        tag = f"VAE beta={beta:g}"
        result = eval_vae.evaluate_vae(Path(path), info, {"n": args.n, "k": args.k})
        with torch.inference_mode():
            z = torch.from_numpy(latents(args.n, model.config.latent_dim, seed=0))
            samples = to_uint8(model.decode(z).numpy(), info.value_range)
        save_grid(samples[:64], out / f"vae_beta{beta:g}_samples.png", nrow=8, scale=2)
        save_grid(recon_pairs(lambda x: model.decode(model.encode(x)[0]), held[:32], info.value_range),
                  out / f"vae_beta{beta:g}_recon.png", nrow=8, scale=2)
        rows[tag] = {"ELBO nats": result["elbo_nats"], f"IWAE-{args.k} nats": result["iwae_nats"],
                     "ELBO bits/dim": result["elbo_bpd"], f"IWAE-{args.k} bits/dim": result["iwae_bpd"],
                     "recon MSE": result["recon_mse"], "KL nats": result["kl_nats"],
                     "active units": f"{result['active_units']}/{model.config.latent_dim}", "MIG": result["mig"],
                     "FD vs held-out": frechet_distance(readout.features(samples), held_features)}
        report["models"][tag] = {"checkpoint": str(path), **{k: v for k, v in result.items() if k != "table"}}
    prior, info = load_checkpoint(args.prior)
    numbers, codes = eval_vq.vq_numbers(prior.vqvae, held, info.value_range)
    nll, bits = eval_vq.code_nll(prior, codes)
    samples = eval_vq.prior_samples(prior, args.n, seed=0)
    save_grid(samples[:64], out / "vq_prior_samples.png", nrow=8, scale=2)
    cooler = eval_vq.prior_samples(prior, args.n, seed=0, temperature=0.8, top_k=32)
    save_grid(cooler[:64], out / "vq_prior_samples_t0.8_k32.png", nrow=8, scale=2)
    with torch.inference_mode():
        recon = to_uint8(prior.vqvae.decode(codes).numpy(), info.value_range)
    save_grid(recon_pairs(lambda x: prior.vqvae(x)[0], held[:32], info.value_range), out / "vq_recon.png", nrow=8,
              scale=2)
    k = prior.config.vq.codebook_size
    rows[f"VQ-VAE K={k} + prior"] = {
        "recon MSE": numbers["recon_mse"], "code perplexity": numbers["perplexity"],
        "unused codes": numbers["unused_codes"], "prior bits/code": bits,
        "FD vs held-out": frechet_distance(readout.features(samples), held_features)}
    rows[f"VQ-VAE K={k} + prior, temperature 0.8, top-32"] = {
        "FD vs held-out": frechet_distance(readout.features(cooler), held_features)}
    rows[f"VQ-VAE K={k} reconstructions of the held-out faces (the prior's ceiling)"] = {
        "FD vs held-out": frechet_distance(readout.features(recon), held_features)}
    report["models"]["vqvae+prior"] = {"checkpoint": args.prior, **numbers, "code_nll_nats": nll,
                                       "code_nll_bits_per_code": bits}
    report["rows"] = rows
    columns = list(dict.fromkeys(c for r in rows.values() for c in r))
    lines = [f"# VAE vs β-VAE vs VQ-VAE on held-out faces (n = {args.n})", "",
             "| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for name, r in rows.items()]
    lines += ["", "ELBO/IWAE: nats per image and bits/dim on 8-bit bins (Burda et al. 2016's IWAE, k samples; "
              "IWAE >= ELBO). MIG: Chen et al. 2018, estimated as disentanglement_lib (20-bin histograms), on 10000 "
              "training faces' posterior means vs the 9 factors. FD (domain features): Fréchet distance in the "
              "features of a readout CNN trained on the faces labels (held-out R² "
              + ", ".join(f"{k[3:]} {v:.2f}" for k, v in score.items()) + "); not FID.",
              f"VAE samples: z ~ N(0, I) seed 0; prior samples: temperature 1, no top-k, seed 0 (and the row that "
              f"says otherwise). VQ-VAE: {prior.config.vq.grid_size}x{prior.config.vq.grid_size} codes; prior: "
              f"{prior.config.layers} layers, width {prior.config.width}."]
    write_report(out, "vae_vq", lines, report, report["machine"]["cpu"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
