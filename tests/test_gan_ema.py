"""The generator-weight average (`--ema`): its arithmetic, that the checkpoint holds it and the resume state both
the average and the raw weights, exact resume with it, and the inputs it refuses."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from latentforge.checkpoint import state_path
from latentforge.cli import main
from latentforge.errors import InputError, TrainingError
from latentforge.models.gan import GAN, GANConfig
from latentforge.training.data.points import PointData, ring_modes
from latentforge.training.ema import GeneratorAverage
from latentforge.training.train import TrainConfig, train

TINY = {"hidden": 16, "depth": 2}


def tiny(out, **overrides):
    fields = dict(kind="wgan-gp", data="ring", out=str(out), steps=6, batch_size=16, progress=False, device="cpu",
                  model_options=TINY, sample_every=6, checkpoint_every=3, log_every=2, critic_steps=2, ema=0.8)
    fields.update(overrides)
    return TrainConfig(**fields)


def test_the_average_follows_its_formula_and_applied_swaps_back():
    torch.manual_seed(0)
    model = GAN(GANConfig(point_dim=2, hidden=4, depth=1))
    average = GeneratorAverage(model, 0.75)
    start = [p.detach().clone() for p in model.generator.parameters()]
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    average.update()
    for avg, p0 in zip(average.averages, start):
        assert torch.allclose(avg, p0 + 0.25)          # 0.75 * p0 + 0.25 * (p0 + 1)
    own = [p.detach().clone() for p in model.generator.parameters()]
    with average.applied():
        assert all(torch.equal(p, a) for p, a in zip(model.generator.parameters(), average.averages))
    assert all(torch.equal(p, o) for p, o in zip(model.generator.parameters(), own))


def test_the_checkpoint_holds_the_average_and_the_state_both(tmp_path):
    train(tiny(tmp_path))
    ckpt = load_file(tmp_path / "checkpoint.safetensors")
    state = load_file(state_path(tmp_path / "checkpoint.safetensors"))
    gen = [k for k in ckpt if k.startswith("generator.")]
    assert gen and all(torch.equal(ckpt[k], state["ema." + k]) for k in gen)
    assert not all(torch.equal(ckpt[k], state["model." + k]) for k in gen)   # the average is not the last weights
    disc = [k for k in ckpt if k.startswith("discriminator.")]
    assert disc and all(torch.equal(ckpt[k], state["model." + k]) for k in disc)


def test_without_ema_the_checkpoint_holds_the_last_weights(tmp_path):
    train(tiny(tmp_path, ema=0))
    ckpt = load_file(tmp_path / "checkpoint.safetensors")
    state = load_file(state_path(tmp_path / "checkpoint.safetensors"))
    assert all(torch.equal(ckpt[k], state["model." + k]) for k in ckpt)
    assert not any(k.startswith("ema.") for k in state)


@pytest.mark.parametrize("kind", ["gan", "wgan-gp"])
def test_killed_and_resumed_with_ema_ends_bit_identical(tmp_path, kind, assert_same_run):
    class Interrupted(PointData):
        calls = 0

        def get(self, split, indices):
            Interrupted.calls += 1
            if Interrupted.calls == 5:
                raise KeyboardInterrupt
            return super().get(split, indices)

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(tiny(whole, kind=kind))
    with pytest.raises(KeyboardInterrupt):
        train(tiny(parts, kind=kind), data=Interrupted("ring", ring_modes(), 0.01))
    train(tiny(parts, kind=kind, resume=True))
    assert_same_run(whole, parts)


def test_resume_with_another_ema_is_refused(tmp_path):
    train(tiny(tmp_path, steps=3))
    with pytest.raises(TrainingError, match="ema"):
        train(tiny(tmp_path, ema=0.9, resume=True))


@pytest.mark.parametrize("ema", [1.0, -0.1, True, "0.9"])
def test_a_bad_ema_is_refused(tmp_path, ema):
    with pytest.raises(InputError, match="ema must be"):
        tiny(tmp_path, ema=ema)


def test_ema_on_a_model_without_a_generator_is_refused(tmp_path):
    with pytest.raises(InputError, match="drop --ema"):
        TrainConfig(kind="vae", data="digits", out=str(tmp_path), ema=0.9)


def test_the_cli_passes_ema(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("latentforge.training.train.train", lambda cfg: seen.append(cfg) or (_ for _ in ()).throw(
        SystemExit(0)))
    with pytest.raises(SystemExit):
        main(["train", "gan", "--data", "ring", "--out", str(tmp_path / "r"), "--ema", "0.95"])
    assert seen[0].ema == 0.95
