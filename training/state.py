"""Training state for an exact resume: optimizer moments and weights in one safetensors file beside the checkpoint."""
from __future__ import annotations

import json
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict, fields
from pathlib import Path

import torch

from latentforge.checkpoint import check_finite, save_checkpoint, state_path
from latentforge.errors import TrainingError
from latentforge.files import atomic_write


def save_state(ckpt: Path, model, optimizers, data_name: str, step: int, cfg, identity: dict,
          wall: float, ema=None) -> None:
    """The resume state (weights included, so it is complete on its own) first, then the checkpoint.

    A kill between the two writes leaves a state one save newer than the checkpoint; resume reads the state.
    With a generator average (`ema`, training/ema.py) the state holds it beside the raw weights and the
    checkpoint holds it as the generator.
    """
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update(ema.state())
    groups = []
    for i, opt in enumerate(optimizers):
        sd = opt.state_dict()
        groups.append(sd["param_groups"])
        for index, state in sd["state"].items():
            for name, value in state.items():
                tensors[f"opt{i}.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    train_json = json.dumps(asdict(cfg), sort_keys=True)
    meta = {"step": str(step), "run": json.dumps(identity, sort_keys=True), "train": train_json,
            "param_groups": json.dumps(groups), "wall_s": repr(wall)}
    atomic_write(state_path(ckpt), lambda tmp: save_file(tensors, tmp, metadata=meta))
    with ema.swapped_in(model) if ema is not None else nullcontext(model) as saved:
        save_checkpoint(ckpt, saved, data=data_name, step=step, extra={"command": cfg.command, "train": train_json})


# What the optimizers latentforge trains with (Adam, and SGD's momentum) keep per parameter.
OPTIMIZER_STATE = frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"})


def load_state(ckpt: Path, model, optimizers, identity: dict, device, ema=None) -> tuple[int, float]:
    """Load weights, optimizer state (and the generator average into `ema`) from RUN_DIR; returns (step, wall
    seconds so far).

    A model option added to latentforge after the checkpoint was written is absent from its stored run; left at
    its default it changes nothing, so it does not stop the resume."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    spath = state_path(ckpt)
    if not spath.exists():
        raise TrainingError(f"{ckpt} has no training state ({spath.name}), so it cannot be resumed exactly; "
                            "start a new --out (the weights themselves are fine to sample from)")
    try:
        with safe_open(str(spath), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(spath))
        stored, step, groups = json.loads(meta["run"]), int(meta["step"]), json.loads(meta["param_groups"])
        wall = float(meta.get("wall_s", 0.0))
        if not isinstance(stored, dict):
            raise TypeError(f"its run is a JSON {type(stored).__name__}, not an object")
    except Exception as e:  # a damaged or foreign file: safetensors, JSON and key errors alike
        raise TrainingError(f"training state {spath} is unreadable ({type(e).__name__}: {e}); "
                            "start a new --out") from None
    check_finite(state, spath)
    stored.pop("g_ema", None)   # runs of the first --g-ema version recorded it; it never steered their training
    defaults = {f"model.{f.name}": f.default for f in fields(model.config)}
    differing = [k for k in sorted(set(stored) | set(identity)) if stored.get(k) != identity.get(k)
                 and not (k not in stored and k in defaults and identity.get(k) == defaults[k])]
    differences = [f"{k} (checkpoint {stored.get(k)!r}, now {identity.get(k)!r})"  # another kind differs in all else
                   for k in (["kind"] if "kind" in differing else differing)]
    if differences:
        raise TrainingError(f"cannot resume: this run differs from RUN_DIR's checkpoint in {', '.join(differences)}; "
                            "use the same settings or choose a new --out")
    try:
        _apply(state, groups, model, optimizers, device)
        if ema is not None:
            ema.load(state)
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise TrainingError(f"training state {spath} does not fit this run's model and optimizers ({first}); "
                            "the file is damaged: start a new --out") from None
    return step, wall


def _apply(state: dict, groups: list, model, optimizers, device) -> None:
    model.load_state_dict({k.removeprefix("model."): v.to(device) for k, v in state.items() if k.startswith("model.")})
    for i, opt in enumerate(optimizers):
        per_param: dict[int, dict] = {}
        for key, value in state.items():
            if key.startswith(("model.", "ema.")):
                continue
            owner, index, name = key.split(".", 2)
            if owner == f"opt{i}":
                per_param.setdefault(int(index), {})[name] = value
        params = [p for group in opt.param_groups for p in group["params"]]
        sets = Counter(frozenset(entries) for entries in per_param.values())
        usual = sets.most_common(1)[0][0] if sets else frozenset()
        for index, entries in per_param.items():   # torch checks none of this at load, only at the next step
            if not 0 <= index < len(params):
                raise ValueError(f"opt{i}.{index} names parameter {index} of {len(params)}")
            if set(entries) != usual or not usual <= OPTIMIZER_STATE:   # a renamed moment: KeyError at the step
                raise ValueError(f"opt{i}.{index} holds {sorted(entries)}, where the others hold {sorted(usual)} "
                                 f"(of {sorted(OPTIMIZER_STATE)})")
            for name, value in entries.items():
                if name != "step" and value.shape != params[index].shape:
                    raise ValueError(f"opt{i}.{index}.{name} has shape {list(value.shape)}, the parameter "
                                     f"{list(params[index].shape)}")
        for group in groups[i]:
            group["betas"] = tuple(group["betas"])
        opt.load_state_dict({"state": per_param, "param_groups": groups[i]})
