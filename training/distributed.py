"""Training on several processes with torch.distributed, one process per rank, started by torchrun.

A step of an N-process run is the step a 1-process run takes at the same global batch:
- every rank draws the same global batch indices from (seed, step) and keeps its own slice of them;
- every rank seeds its noise from (seed, step) too, draws the rows of the whole global batch and keeps
  its slice (recipe.normal / recipe.uniform), so no rank's noise depends on how many ranks there are;
- gradients are averaged over the ranks just before each optimizer step, by an all_reduce in an
  optimizer step pre-hook. Not DistributedDataParallel: the recipes call submodules and methods
  (model.generator, model.discriminator, losses.vae_terms(model, ...)) rather than model(x), take
  second derivatives (the WGAN-GP penalty) and step two optimizers per step, none of which DDP's
  forward-hook bookkeeping follows; averaging at the optimizer covers every recipe the same way.
- BatchNorm (the DCGANs) stays per rank: each rank normalizes with its own slice's statistics, as
  DDP does by default, and the running statistics saved are rank 0's. So a BatchNorm model is not
  bit-equal across world sizes; models without BatchNorm (VAE, wgan-gp critic, point GANs) are, up to
  float summation order.
Only rank 0 writes the checkpoint, samples, plots and the log; every rank reads RUN_DIR on resume, so
several nodes need it on a shared filesystem.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import torch

from latentforge.errors import InputError, TrainingError

# kinds whose state changes outside the optimizers would drift apart across ranks
UNSYNCED_KINDS = {"vqvae": "its codebook moves by exponential averages and dead-code restarts, not gradients"}


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        """The rank that writes files."""
        return self.rank == 0


def world_from_env(env=None) -> World:
    """The rank and world size torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); one process without them."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return World()
    try:
        world = World(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    except ValueError:
        raise InputError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers, got {env.get('RANK')!r}/"
                         f"{env.get('WORLD_SIZE')!r}/{env.get('LOCAL_RANK')!r}; start the run with torchrun") from None
    if not 0 <= world.rank < world.size:
        raise InputError(f"RANK {world.rank} is outside WORLD_SIZE {world.size}; start the run with torchrun")
    return world


def check_can_split(kind: str, batch_size: int, world: World) -> None:
    if world.size == 1:
        return
    if kind in UNSYNCED_KINDS:
        raise InputError(f"{kind} cannot train on {world.size} processes: {UNSYNCED_KINDS[kind]}; "
                         "train it on one process")
    if batch_size % world.size:
        raise InputError(f"batch_size {batch_size} does not split evenly over {world.size} processes; "
                         f"use a multiple of {world.size}")


def device_for(world: World, device: str) -> torch.device:
    """Each rank on a node takes its own GPU (LOCAL_RANK) when it trains on CUDA."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and world.size > 1:
        device = f"cuda:{world.local_rank}"
    return torch.device(device)


def join(world: World, device: torch.device) -> bool:
    """Joins the process group torchrun set up (NCCL on GPU, gloo on CPU); True if this call created it."""
    import torch.distributed as dist

    if world.size == 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=(
        device if device.type == "cuda" else None))
    return True


def barrier(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier()


def leave() -> None:
    import torch.distributed as dist

    dist.destroy_process_group()


def my_slice(indices: np.ndarray, real_batches: int, world: World) -> np.ndarray:
    """This rank's share of the global indices: its slice of each of the step's `real_batches` batches, so a
    recipe that chunks its batch per critic step chunks the same global batches on every rank."""
    if world.size == 1:
        return indices
    per_batch = indices.reshape(real_batches, -1)
    width = per_batch.shape[1] // world.size
    return per_batch[:, world.rank * width:(world.rank + 1) * width].reshape(-1)


class RankNoise(torch.Generator):
    """A torch.Generator that knows its rank: recipe.normal/uniform draw the global rows and keep this rank's."""

    def __new__(cls, seed: int, world: World):  # torch.Generator's constructor takes only a device
        return super().__new__(cls)

    def __init__(self, seed: int, world: World):
        super().__init__()
        self.manual_seed(seed)
        self.rank, self.world_size = world.rank, world.size


def average_gradients(optimizers, world: World) -> None:
    """Before every step of every optimizer, replace each gradient by its mean over the ranks."""
    if world.size == 1:
        return
    import torch.distributed as dist

    def hook(opt, args, kwargs):
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])  # one all_reduce per step, not one per tensor
        dist.all_reduce(flat)
        flat /= world.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    for opt in optimizers:
        opt.register_step_pre_hook(hook)


def average_metrics(metrics: dict, world: World) -> dict:
    """The step's metrics averaged over the ranks, so every rank logs (and stops on) the same numbers."""
    if world.size == 1 or not metrics:
        return metrics
    import torch.distributed as dist

    names = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in names], dtype=torch.float64)
    dist.all_reduce(values)
    return {k: float(v) / world.size for k, v in zip(names, values.tolist())}


def torchrun(nproc: int, program: list[str], extra: tuple[str, ...] = ()) -> None:
    """Runs `python -m torch.distributed.run --standalone --nproc-per-node nproc PROGRAM...` and waits.

    torchrun stops every rank once one fails and prints that rank's error; this turns its exit status
    into one line that says so."""
    if not isinstance(nproc, int) or nproc < 1:
        raise InputError(f"--nproc-per-node must be a positive integer, got {nproc!r}")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *extra, *program]
    if not extra:
        command[3:3] = ["--standalone"]
    code = subprocess.run(command).returncode
    if code:
        raise TrainingError(f"distributed training stopped: a rank failed (torchrun exit status {code}); its error "
                            "is printed above; RUN_DIR keeps its last complete checkpoint, so fix the cause "
                            "and rerun with --resume")
