"""`latentforge evaluate CKPT`: the held-out numbers each model kind is judged by.

Each kind's evaluator lives in its own module and is named in EVALUATORS as "module:function";
it takes (path, info, options) and returns a flat-ish JSON-able dict with a "table" entry:
a list of (name, value, unit) rows that the CLI prints.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from latentforge.checkpoint import read_info
from latentforge.errors import InputError

EVALUATORS: dict[str, str] = {
    "vae": "latentforge.training.eval_vae:evaluate_vae",
    "vqvae": "latentforge.training.eval_vq:evaluate_vqvae",
    "prior": "latentforge.training.eval_vq:evaluate_prior",
    **{kind: "latentforge.training.eval_modes:evaluate_gan" for kind in ("gan", "wgan-gp", "unrolled-gan")},
}


def evaluate(path: str | Path, **options) -> dict:
    """Evaluate the checkpoint at `path`; options are the evaluator's own (n, seed, batches, ...)."""
    info = read_info(path)
    target = EVALUATORS.get(info.kind)
    if target is None:
        known = ", ".join(sorted(EVALUATORS)) or "none yet"
        raise InputError(f"no evaluation for {info.kind!r} checkpoints ({path}); evaluate knows: {known}")
    module, func = target.split(":")
    result = getattr(importlib.import_module(module), func)(Path(path), info, options)
    return {"checkpoint": str(path), "kind": info.kind, "data": info.data, "step": info.step, **result}


def format_table(result: dict) -> str:
    rows = result.get("table", [])
    width = max((len(name) for name, _, _ in rows), default=0)
    lines = [f"{result['kind']} on {result['data']} at step {result['step']}"]
    for name, value, unit in rows:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"  {name:<{width}}  {text} {unit}".rstrip())
    return "\n".join(lines)
