"""The run log (RUN_DIR/log.jsonl) and starting or resuming a run from RUN_DIR's checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

from latentforge.files import atomic_write

from .plots import read_log
from .state import load_state


def start_or_resume(cfg, ckpt: Path, log_path: Path | None, model, optimizers, identity: dict, device, average):
    """Load RUN_DIR's checkpoint when resuming; returns (step, wall seconds so far, log records so far)."""
    if not (cfg.resume and ckpt.exists()):
        write_log(log_path, [])
        note = "no checkpoint in RUN_DIR; started fresh" if cfg.resume else "started"
        return 0, 0.0, [event(log_path, 0, 0.0, note)]
    step, wall = load_state(ckpt, model, optimizers, identity, device, average)
    # what a killed run logged after its checkpoint goes; ranks other than 0 keep no log
    records = [r for r in read_log(log_path) if r["step"] <= step] if log_path else []
    write_log(log_path, records)
    return step, wall, records + [event(log_path, step, wall, f"resumed from {ckpt} at step {step}")]


def write_log(path: Path | None, records: list[dict]) -> None:
    if path is None:  # a rank other than 0
        return
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def log(path: Path | None, record: dict) -> dict:
    if path is None:
        return record
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def event(path: Path, step: int, wall: float, text: str) -> dict:
    return log(path, {"step": step, "wall_s": round(wall, 3), "event": text})
