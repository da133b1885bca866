"""Random kills of a training run: SIGKILL at points drawn from a seeded RNG, resume, and compare with a run that was
never stopped. Shared by tests/test_kills.py (a few points per kind) and benchmarks/kills.py (20 per kind).

Each run is a forked child of this process (torch and the training code are imported once, so a child starts in
milliseconds rather than the seconds a new interpreter takes); the parent kills it with SIGKILL after a delay drawn
uniformly from (0, 0.95 x the uninterrupted run's wall time), so kills land in start-up, in steps, in evaluation
and in the checkpoint writes (a checkpoint every step makes those a large share of the time). Then a resumed child
runs to the end, and its checkpoint and training state must equal the uninterrupted run's, bit for bit.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from latentforge.checkpoint import state_path
from latentforge.training.train import TrainConfig, train

STEPS = 8
# tiny models on the cheapest data each kind takes: a run is well under a second of training
KINDS = {"vae": dict(data="digits", latent_dim=4, model_options={"base_channels": 4}),
         "dcgan": dict(data="digits", latent_dim=4, model_options={"ngf": 4, "ndf": 4}),
         "wgan-gp": dict(data="ring", model_options={"hidden": 8, "depth": 2}, critic_steps=2),
         "vqvae": dict(data="digits", model_options={"base_channels": 4, "codebook_size": 8, "code_dim": 2,
                                                     "downsample": 3, "res_blocks": 0})}
FORK = multiprocessing.get_context("fork")
TRIES = 5   # draws per point until the kill lands


def config(kind: str, out: Path, resume: bool = False) -> TrainConfig:
    return TrainConfig(kind=kind, out=str(out), steps=STEPS, batch_size=8, checkpoint_every=1, log_every=1,
                       sample_every=10 ** 6, eval_batches=1, progress=False, device="cpu", resume=resume,
                       **KINDS[kind])


def _child(cfg: TrainConfig) -> None:
    torch.set_num_threads(1)
    train(cfg)


def run(cfg: TrainConfig, kill_after: float | None = None) -> tuple[int, float]:
    """(exit code, wall seconds) of `cfg` trained in a forked child; SIGKILL after `kill_after` seconds if given."""
    start = time.perf_counter()
    child = FORK.Process(target=_child, args=(cfg,))
    child.start()
    child.join(kill_after)
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    return child.exitcode, time.perf_counter() - start


def same_run(a_dir: Path, b_dir: Path) -> str | None:
    """None when both runs end with bit-identical checkpoints and training states, else what differs."""
    for name in ("checkpoint.safetensors", state_path("checkpoint.safetensors").name):
        a, b = load_file(a_dir / name), load_file(b_dir / name)
        if a.keys() != b.keys() or not a:
            return f"{name}: tensors {sorted(set(a) ^ set(b))[:3]} differ"
        for key in a:
            if not torch.equal(a[key], b[key]):
                return f"{name}: {key} differs"
    return None


def kill_and_resume(kind: str, root: Path, points: int, seed: int, latest: float = 0.95) -> dict:
    """One uninterrupted run, then `points` runs killed at random delays (up to `latest` x its wall time) and
    resumed; what happened at each."""
    torch.set_num_threads(1)
    train(config(kind, root / "warm-up"))   # in this process: every import the children would pay for, once
    code, whole = run(config(kind, root / "whole"))
    if code != 0:
        raise RuntimeError(f"the uninterrupted {kind} run failed with exit code {code}")
    rng = np.random.default_rng([seed, sorted(KINDS).index(kind)])
    results = []
    for i in range(points):
        out = root / f"killed-{i}"
        for attempt in range(1, TRIES + 1):   # a run faster than the one measured may end before its kill
            delay = rng.uniform(0.0, latest * whole)
            shutil.rmtree(out, ignore_errors=True)
            code, _ = run(config(kind, out), kill_after=float(delay))
            killed = code == -signal.SIGKILL
            if killed:
                break
        resumed, _ = run(config(kind, out, resume=(out / "checkpoint.safetensors").exists()))
        difference = same_run(root / "whole", out) if resumed == 0 else f"the resumed run exited with {resumed}"
        results.append({"delay_s": round(float(delay), 4), "killed": killed, "attempts": attempt,
                        "resume_exit": resumed, "difference": difference})
    return {"kind": kind, "uninterrupted_s": round(whole, 3), "points": results}
