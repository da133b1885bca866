"""Training on 2 CPU processes under torchrun (gloo) equals training on 1 at the same global batch.

Each torchrun launch costs seconds on 2 cores, so the runs are shared by the tests of this module.
"""
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from latentforge.checkpoint import read_info
from latentforge.cli import main
from latentforge.errors import InputError, TrainingError
from latentforge.training import distributed
from latentforge.training.recipes.recipe import normal, uniform
from latentforge.training.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import SETTINGS  # noqa: E402

WORKER = str(Path(__file__).parent / "ddp_worker.py")
STEPS = 4


def weights(run: Path) -> dict:
    return load_file(str(run / "checkpoint.safetensors"))


def assert_close(got: dict, want: dict, rel: float = 1e-5) -> None:
    assert got.keys() == want.keys()
    for name, w in want.items():
        error = float((got[name].double() - w.double()).norm() / w.double().norm().clamp_min(1e-30))
        assert error <= rel, f"{name}: relative error {error:.3g}"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("one") / "run"
    train(TrainConfig(out=str(out), steps=STEPS, **SETTINGS))
    return weights(out)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """The CLI's own launcher: latentforge train ... --nproc-per-node 2."""
    out = tmp_path_factory.mktemp("two") / "run"
    assert main(["train", "vae", "--data", "digits", "--out", str(out), "--steps", str(STEPS), "--batch-size", "8",
                 "--checkpoint-every", "2", "--sample-every", "100", "--no-progress",
                 "--model-options", '{"base_channels": 8}', "--nproc-per-node", "2"]) in (0, None)
    return out


def test_two_processes_equal_one_at_the_same_global_batch(one_process, two_processes, tmp_path):
    assert read_info(two_processes / "checkpoint.safetensors").step == STEPS
    assert_close(weights(two_processes), one_process)
    train(TrainConfig(out=str(tmp_path / "init"), steps=1, **SETTINGS))  # the comparison can fail: weights move
    with pytest.raises(AssertionError):
        assert_close(weights(tmp_path / "init"), one_process)
    assert "--nproc-per-node" not in read_info(two_processes / "checkpoint.safetensors").extra["command"]


def test_resume_under_another_world_size(one_process, tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), steps=2, **SETTINGS))   # 1 process to step 2, then 2 processes to the end
    distributed.torchrun(2, [WORKER, str(out), str(STEPS), "--resume"])
    assert_close(weights(out), one_process)


def test_crashed_rank_stops_the_job_and_resume_ends_as_an_unbroken_run(two_processes, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="a rank failed.*--resume"):   # rank 1 dies fetching step 3's batch
        distributed.torchrun(2, [WORKER, str(out), str(STEPS), "--crash-rank", "1", "--crash-at", "3"])
    assert read_info(out / "checkpoint.safetensors").step == 2
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.safetensors", "checkpoint.state.safetensors",
                                                     "log.jsonl"]   # no temporary or half-written file
    distributed.torchrun(2, [WORKER, str(out), str(STEPS), "--resume"])
    assert_close(weights(out), weights(two_processes), rel=0.0)


def test_two_nodes_on_localhost(one_process, tmp_path):
    """torchrun --nnodes 2 --node-rank 0|1 --master-addr --master-port, each "node" one process."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, failures = tmp_path / "run", []

    def node(rank: int) -> None:
        try:
            distributed.torchrun(1, [WORKER, str(out), str(STEPS)], extra=(
                "--nnodes", "2", "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port)))
        except TrainingError as e:
            failures.append(e)

    nodes = [threading.Thread(target=node, args=(rank,)) for rank in (0, 1)]
    for t in nodes:
        t.start()
    for t in nodes:
        t.join(timeout=120)
    assert not failures and not any(t.is_alive() for t in nodes)
    assert_close(weights(out), one_process)


@pytest.mark.parametrize("env, match", [
    ({"WORLD_SIZE": "2", "RANK": "2"}, "outside WORLD_SIZE"),
    ({"WORLD_SIZE": "two"}, "must be integers"),
])
def test_bad_torchrun_environment_is_refused(env, match):
    with pytest.raises(InputError, match=match):
        distributed.world_from_env(env)


@pytest.mark.parametrize("kind, batch, match", [("vae", 7, "multiple of 2"), ("vqvae", 8, "one process")])
def test_what_cannot_split_is_refused_before_launching(kind, batch, match):
    with pytest.raises(InputError, match=match):
        distributed.check_can_split(kind, batch, distributed.World(rank=0, size=2))


def test_each_rank_takes_its_slice_of_every_critic_batch():
    import numpy as np

    indices = np.arange(12)  # 2 critic batches of 6
    slices = [distributed.my_slice(indices, 2, distributed.World(rank=r, size=3)) for r in range(3)]
    assert [s.tolist() for s in slices] == [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10, 11]]


@pytest.mark.parametrize("draw", [normal, uniform])
def test_ranks_noise_is_their_slice_of_the_one_process_noise(draw):
    seed = int(torch.randint(0, 2**31, ()))
    whole = draw(distributed.RankNoise(seed, distributed.World()), 6, 3)
    parts = [draw(distributed.RankNoise(seed, distributed.World(rank=r, size=3)), 2, 3) for r in range(3)]
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(whole, draw(torch.Generator().manual_seed(seed), 6, 3))  # one process: today's draws
