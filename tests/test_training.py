"""Training: the loop's files, exact resume, NaN stops, config checks, a real learning check, and the loss pieces."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from latentforge.checkpoint import load_checkpoint, read_info, state_path
from latentforge.errors import InputError, TrainingError
from latentforge.training import losses
from latentforge.training.train import TrainConfig, TrainResult, train

TINY = {"vae": dict(latent_dim=4, model_options={"base_channels": 8}),
        "dcgan": dict(latent_dim=8, model_options={"ngf": 8, "ndf": 8})}


class SquaresData:
    """A tiny ImageData: 32 px grayscale, one bright 8 px square on black, its corner set by the index.

    `poison_from` makes train batches from that call on NaN floats, to drive a loss to NaN.
    """

    name = "squares"
    image_size = 32
    channels = 1
    attribute_names: list[str] = []

    def __init__(self, n_train: int = 200, n_test: int = 40, poison_from: int | None = None) -> None:
        self.sizes = {"train": n_train, "test": n_test}
        self.poison_from = poison_from
        self.train_calls = 0

    def size(self, split: str) -> int:
        return self.sizes[split]

    def get(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices) + (self.sizes["train"] if split == "test" else 0)
        images = np.zeros((len(indices), 32, 32, 1), dtype=np.uint8)
        for k, i in enumerate(indices):
            r, c = (i * 7) % 24, (i * 11) % 24
            images[k, r:r + 8, c:c + 8] = 255
        if split == "train":
            self.train_calls += 1
            if self.poison_from is not None and self.train_calls >= self.poison_from:
                images = np.full(images.shape, np.nan, dtype=np.float32)
        return images, np.zeros((len(indices), 0), dtype=np.float32)


def config(kind: str, out, **overrides) -> TrainConfig:
    fields = dict(kind=kind, data="squares", out=str(out), steps=4, batch_size=8, progress=False, device="cpu",
                  eval_batches=2, command=f"latentforge train {kind} --out {out}", **TINY[kind])
    fields.update(overrides)
    return TrainConfig(**fields)


def read_log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind, keys", [("vae", {"loss", "recon", "kl"}), ("dcgan", {"loss_d", "loss_g", "d_x", "d_g_z"})])
def test_training_writes_checkpoint_state_log_samples_and_curves(tmp_path, kind, keys):
    result = train(config(kind, tmp_path, steps=4, log_every=2, sample_every=2, checkpoint_every=2), data=SquaresData())
    assert isinstance(result, TrainResult) and result.step == 4 and result.seconds > 0
    assert result.checkpoint == tmp_path / "checkpoint.safetensors"
    assert state_path(result.checkpoint).exists()
    for name in ("log.jsonl", "curves.png", "samples_000002.png", "samples_000004.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    model, info = load_checkpoint(result.checkpoint)
    assert (info.kind, info.step, info.data) == (kind, 4, "squares")
    assert info.extra["command"] == f"latentforge train {kind} --out {tmp_path}"
    assert json.loads(info.extra["train"])["steps"] == 4
    assert model.config.image_size == 32 and model.config.channels == 1
    logged = [r for r in read_log(tmp_path) if "event" not in r]
    assert [r["step"] for r in logged if keys <= set(r)] == [2, 4]
    assert keys <= set(result.metrics)
    assert all(math.isfinite(r[k]) for r in logged for k in keys if k in r)
    if kind == "vae":
        held_out = [r for r in logged if "test_elbo" in r]
        assert [r["step"] for r in held_out] == [2, 4]
        assert all(r["test_bpd"] > 0 for r in held_out)
    else:
        assert all(0 <= r[k] <= 1 for r in logged for k in ("d_x", "d_g_z"))


@pytest.mark.parametrize("kind", ["vae", "dcgan"])
def test_killed_and_resumed_run_ends_bit_identical(tmp_path, kind, assert_same_run):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(config(kind, whole, steps=6, checkpoint_every=3), data=SquaresData())
    train(config(kind, parts, steps=3, checkpoint_every=3), data=SquaresData())  # "killed" after step 3
    result = train(config(kind, parts, steps=6, checkpoint_every=3, resume=True), data=SquaresData())
    assert result.step == 6
    assert_same_run(whole, parts)
    assert any("resumed" in r.get("event", "") for r in read_log(parts))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    train(config("vae", tmp_path, steps=2), data=SquaresData())
    ckpt = tmp_path / "checkpoint.safetensors"
    before = ckpt.read_bytes(), state_path(ckpt).read_bytes()
    with pytest.raises(TrainingError, match=r"loss became nan at step 3; kept the last good checkpoint at step 2"):
        train(config("vae", tmp_path, steps=6, checkpoint_every=1, resume=True), data=SquaresData(poison_from=1))
    assert (ckpt.read_bytes(), state_path(ckpt).read_bytes()) == before


def test_nan_loss_before_any_checkpoint_writes_none(tmp_path):
    with pytest.raises(TrainingError, match="loss_d became nan at step 1; no checkpoint was written yet"):
        train(config("dcgan", tmp_path), data=SquaresData(poison_from=1))
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_exploding_learning_rate_is_stopped_with_advice(tmp_path):
    with pytest.raises(TrainingError, match=r"at step \d+; .*lower --lr \(now 1e\+30\)"):
        train(config("vae", tmp_path, steps=20, checkpoint_every=1, lr=1e30), data=SquaresData())
    if (tmp_path / "checkpoint.safetensors").exists():
        weights = load_file(tmp_path / "checkpoint.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values())


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch):
    import dataclasses

    from latentforge.training import recipes
    from latentforge.training.recipes.vae import vae_step

    real_step = vae_step

    def overflowing_step(cfg, model, optimizers, x, noise):  # a finite loss, then an update that overflows
        metrics = real_step(cfg, model, optimizers, x, noise)
        with torch.no_grad():
            model.encoder[0].weight.fill_(float("inf"))
        return metrics

    monkeypatch.setitem(recipes.RECIPES, "vae", dataclasses.replace(recipes.RECIPES["vae"], step=overflowing_step))
    with pytest.raises(TrainingError, match=r"weights became non-finite \(encoder.0.weight\) at step 1; no checkpoint"):
        train(config("vae", tmp_path, checkpoint_every=1), data=SquaresData())
    assert not (tmp_path / "checkpoint.safetensors").exists()


@pytest.mark.parametrize("change, field", [({"seed": 1}, "seed"), ({"batch_size": 4}, "batch_size"),
                                           ({"lr": 1e-4}, "lr"), ({"beta": 0.5}, "beta"),
                                           ({"model_options": {"base_channels": 4}}, "model.base_channels")])
def test_resume_refuses_a_different_run(tmp_path, change, field):
    train(config("vae", tmp_path, steps=2), data=SquaresData())
    with pytest.raises(TrainingError, match=rf"differs from RUN_DIR's checkpoint in {field} \(checkpoint"):
        train(config("vae", tmp_path, steps=4, resume=True, **change), data=SquaresData())


def test_resume_refuses_another_kind(tmp_path):
    train(config("vae", tmp_path, steps=2), data=SquaresData())
    with pytest.raises(TrainingError, match=r"differs from RUN_DIR.s checkpoint in kind \(checkpoint .vae., now .dcgan.\); "):
        train(config("dcgan", tmp_path, steps=4, resume=True), data=SquaresData())


def test_a_kill_between_state_and_weights_still_resumes_exactly(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(config("vae", whole, steps=4), data=SquaresData())
    train(config("vae", parts, steps=2), data=SquaresData())
    ckpt = parts / "checkpoint.safetensors"
    weights = ckpt.read_bytes()
    train(config("vae", parts, steps=3, resume=True), data=SquaresData())
    ckpt.write_bytes(weights)  # as if killed after writing the step-3 state but before the step-3 weights
    train(config("vae", parts, steps=4, resume=True), data=SquaresData())
    a, b = load_file(whole / "checkpoint.safetensors"), load_file(ckpt)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigkilled_cli_run_resumes_to_the_same_weights(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    def argv(out, resume=False):
        return [sys.executable, "-m", "latentforge.cli", "train", "vae", "--data", "digits", "--out", str(out),
                "--steps", "300", "--checkpoint-every", "5", "--sample-every", "1000", "--latent-dim", "4",
                "--model-options", '{"base_channels": 4}', "--no-progress"] + (["--resume"] if resume else [])

    killed = subprocess.Popen(argv(tmp_path / "killed"))
    state = state_path(tmp_path / "killed" / "checkpoint.safetensors")
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    subprocess.run(argv(tmp_path / "killed", resume=True), check=True)
    subprocess.run(argv(tmp_path / "whole"), check=True)
    a = load_file(tmp_path / "whole" / "checkpoint.safetensors")
    b = load_file(tmp_path / "killed" / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_forgets_what_was_logged_after_the_checkpoint(tmp_path):
    train(config("vae", tmp_path, steps=4, checkpoint_every=2, log_every=1), data=SquaresData())
    log = tmp_path / "log.jsonl"
    records = read_log(tmp_path)
    train(config("vae", tmp_path / "at2", steps=2), data=SquaresData())
    for name in ("checkpoint.safetensors", "checkpoint.state.safetensors"):  # as if killed after logging step 4
        (tmp_path / "at2" / name).replace(tmp_path / name)
    log.write_text(log.read_text() + '{"step": 5, "lo')  # and torn mid-line
    train(config("vae", tmp_path, steps=4, checkpoint_every=2, log_every=1, resume=True), data=SquaresData())
    resumed = read_log(tmp_path)
    assert [r["step"] for r in resumed if "loss" in r] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed if "loss" in r] == [r["loss"] for r in records if "loss" in r]


def test_existing_checkpoint_needs_resume_and_missing_one_starts_fresh(tmp_path):
    fresh = train(config("vae", tmp_path / "new", steps=2, resume=True), data=SquaresData())
    assert fresh.step == 2
    assert "started fresh" in read_log(tmp_path / "new")[0]["event"]
    with pytest.raises(InputError, match="has a checkpoint at step 2; pass --resume to continue or choose a new --out"):
        train(config("vae", tmp_path / "new", steps=4), data=SquaresData())
    done = train(config("vae", tmp_path / "new", steps=2, resume=True), data=SquaresData())
    assert done.step == 2 and read_info(done.checkpoint).step == 2


@pytest.mark.parametrize("bad", [dict(steps=0), dict(batch_size=0), dict(kind="gann"), dict(beta=-1.0),
                                 dict(beta=float("nan")), dict(lr=0.0), dict(lr=float("inf")), dict(seed=-1),
                                 dict(log_every=0), dict(eval_batches=-1), dict(image_size=0),
                                 dict(model_options={"nope": 1}), dict(model_options={"latent_dim": 4}),
                                 dict(model_options={"base_channels": 0}), dict(device="tpu")])
def test_bad_config_values_are_refused_at_construction(tmp_path, bad):
    fields = dict(kind="vae", out=str(tmp_path))
    fields.update(bad)
    with pytest.raises(InputError):
        TrainConfig(**fields)


def test_batch_larger_than_the_data_set_is_refused(tmp_path):
    with pytest.raises(InputError, match="batch_size 300 is larger than"):
        train(config("vae", tmp_path, batch_size=300), data=SquaresData())


def test_vae_learns_the_squares(tmp_path):
    result = train(config("vae", tmp_path, steps=60, batch_size=16, log_every=10, sample_every=20, lr=3e-3),
                   data=SquaresData())
    losses_logged = [r["loss"] for r in read_log(tmp_path) if "loss" in r]
    elbos = [r["test_elbo"] for r in read_log(tmp_path) if "test_elbo" in r]
    assert losses_logged[-1] < 0.5 * losses_logged[0], losses_logged
    assert elbos[-1] > elbos[0], elbos
    assert result.metrics["test_elbo"] == elbos[-1]


def test_kl_closed_form_matches_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen) * 0.5
    closed = losses.kl_to_standard_normal(mu, logvar)
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(200_000, 3, 5, generator=gen, dtype=torch.float64)
    log_q = torch.distributions.Normal(mu.double(), std.double()).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    estimate, stderr = (log_q - log_p).mean(0), (log_q - log_p).std(0) / math.sqrt(z.shape[0])
    assert torch.all((estimate - closed.double()).abs() < 4 * stderr + 1e-3), (estimate, closed)


def test_likelihoods_match_torch_distributions():
    gen = torch.Generator().manual_seed(1)
    x, mean = torch.rand(2, 1, 4, 4, generator=gen), torch.rand(2, 1, 4, 4, generator=gen)
    expected = -torch.distributions.Normal(mean, 0.1).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(losses.gaussian_nll(x, mean, 0.1), expected)
    binary = (x > 0.5).float()
    expected = -torch.distributions.Bernoulli(probs=mean).log_prob(binary).flatten(1).sum(1)
    torch.testing.assert_close(losses.bernoulli_nll(binary, mean), expected)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_bits_per_dim_of_the_uniform_density_is_eight(value_range):
    lo, hi = value_range
    dims = 3 * 8 * 8
    width = 256 * (hi - lo) / 255  # the 256 pixel bins, each (hi - lo) / 255 wide, centred on lo + k * (hi - lo) / 255
    assert losses.bits_per_dim(-dims * math.log(width), dims, value_range) == pytest.approx(8.0)


def test_gan_losses_at_an_undecided_discriminator():
    half = torch.zeros(16)  # logits 0: D says 0.5 to everything
    assert losses.discriminator_loss(half, half).item() == pytest.approx(2 * math.log(2))
    assert losses.generator_loss(half).item() == pytest.approx(math.log(2))
