"""`latentforge evaluate CKPT`: the held-out numbers each model kind is judged by.

Each kind's evaluator lives in its own module here (vae.py, vq.py, gans.py) and is named in
EVALUATORS; it takes (path, info, options) and returns a flat-ish JSON-able dict with a "table"
entry: a list of (name, value, unit) rows that the CLI prints. The metrics they share (modes,
MIG, feature distances, the readout and digit classifier networks) have modules of their own.
"""
from __future__ import annotations

from pathlib import Path

from latentforge.checkpoint import read_info
from latentforge.errors import InputError

from .gans import evaluate_gan
from .vae import evaluate_vae
from .vq import evaluate_prior, evaluate_vqvae

EVALUATORS = {
    "vae": evaluate_vae,
    "vqvae": evaluate_vqvae,
    "prior": evaluate_prior,
    "gan": evaluate_gan,
    "wgan-gp": evaluate_gan,
    "unrolled-gan": evaluate_gan,
}


def evaluate(path: str | Path, **options) -> dict:
    """Evaluate the checkpoint at `path`; options are the evaluator's own (n, seed, batches, ...)."""
    info = read_info(path)
    evaluator = EVALUATORS.get(info.kind)
    if evaluator is None:
        known = ", ".join(sorted(EVALUATORS)) or "none yet"
        raise InputError(f"no evaluation for {info.kind!r} checkpoints ({path}); evaluate knows: {known}")
    result = evaluator(Path(path), info, options)
    return {"checkpoint": str(path), "kind": info.kind, "data": info.data, "step": info.step, **result}


def format_table(result: dict) -> str:
    rows = result.get("table", [])
    width = max((len(name) for name, _, _ in rows), default=0)
    lines = [f"{result['kind']} on {result['data']} at step {result['step']}"]
    for name, value, unit in rows:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"  {name:<{width}}  {text} {unit}".rstrip())
    return "\n".join(lines)
