"""The GAN training options --gan-loss hinge, --d-lr (TTUR), --g-ema (generator average) and --r1: their arithmetic
against hand-computed answers, what the checkpoint holds, exact resume and refused bad values."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from latentforge.checkpoint import read_info, state_path
from latentforge.models.gan import GAN, GANConfig
from latentforge.cli import main
from latentforge.errors import InputError, TrainingError
from latentforge.training import losses
from latentforge.training.data.points import ring_modes
from latentforge.training.ema import STANDING_BATCH, STANDING_BATCHES, STANDING_SEED, GeneratorAverage
from latentforge.training.recipes.gans import real_logits_r1
from latentforge.training.recipes.recipe import decay_lr
from latentforge.training.train import TrainConfig, _optimizers, train

OPTIONS = dict(gan_loss="hinge", d_lr=3e-3, g_ema=0.9, r1=0.5)


def tiny(out, data="ring", **overrides):
    options = {"hidden": 16, "depth": 2} if data == "ring" else {"ngf": 8, "ndf": 8}
    fields = dict(kind="gan", data=data, out=str(out), steps=4, batch_size=16, progress=False, device="cpu",
                  model_options=options, sample_every=2, checkpoint_every=2, log_every=2, **OPTIONS)
    fields.update(overrides)
    return TrainConfig(**fields)


def test_hinge_losses_known_answers():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert losses.hinge_discriminator_loss(real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert losses.hinge_generator_loss(fake).item() == pytest.approx(1.0)


def test_r1_penalty_of_a_linear_discriminator_is_half_gamma_times_its_squared_weight_norm():
    disc = torch.nn.Linear(3, 1)   # grad_x D(x) = w for every x, so the penalty is gamma / 2 * |w|^2
    real = torch.randn(5, 3)
    logits, penalty = real_logits_r1(tiny("unused", r1=0.8), disc, real)
    torch.testing.assert_close(logits, disc(real))
    assert penalty.item() == pytest.approx(0.4 * disc.weight.square().sum().item(), rel=1e-6)
    penalty.backward()             # the penalty trains D: its gradient is gamma * w
    torch.testing.assert_close(disc.weight.grad, 0.8 * disc.weight.detach())
    assert real_logits_r1(tiny("unused", r1=0.0), disc, real)[1] is None


@pytest.mark.parametrize("kind, fields", [("unrolled-gan", dict(gan_loss="ns", unroll=2)),
                                          ("gan", dict(critic_steps=2))])   # gan: its extra D step and its last
def test_r1_changes_the_discriminator_steps_and_is_recorded(tmp_path, kind, fields):
    runs = {gamma: tmp_path / f"r1_{gamma}" for gamma in (0.0, 5.0)}
    for gamma, out in runs.items():
        train(tiny(out, kind=kind, d_lr=None, r1=gamma, steps=2, batch_size=32, **fields))
    a, b = (load_file(out / "checkpoint.safetensors") for out in runs.values())
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("discriminator."))
    trained = json.loads(read_info(runs[5.0] / "checkpoint.safetensors").extra["train"])
    assert trained["r1"] == 5.0


def test_r1_is_part_of_the_run_so_resuming_with_another_is_refused(tmp_path):
    train(tiny(tmp_path, steps=2, r1=0.5))
    with pytest.raises(TrainingError, match="r1"):
        train(tiny(tmp_path, steps=4, r1=1.0, resume=True))


def test_generator_average_is_the_ramped_exponential_average():
    gen = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in gen.state_dict().items()}
    ema = GeneratorAverage(gen, decay=0.9)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(1.0)
    gen[1].num_batches_tracked.fill_(7)
    ema.update(gen, step=1)          # ramp: keep min(0.9, 2 / 11)
    keep = 2 / 11
    w = start["0.weight"] * keep + (start["0.weight"] + 1) * (1 - keep)
    torch.testing.assert_close(ema.tensors["0.weight"], w)
    assert int(ema.tensors["1.num_batches_tracked"]) == 7   # integer buffers are copied, not averaged
    ema.update(gen, step=1000)       # past the ramp: keep 0.9
    torch.testing.assert_close(ema.tensors["0.weight"], w * 0.9 + (start["0.weight"] + 1) * 0.1)
    own = {k: v.clone() for k, v in gen.state_dict().items()}
    pair = torch.nn.ModuleDict({"generator": gen})
    pair.config = GANConfig(point_dim=2, latent_dim=2)
    with ema.swapped_in(pair) as shown:
        torch.testing.assert_close(shown.generator.state_dict()["0.weight"], ema.tensors["0.weight"])
        # BatchNorm's statistics are the average's own, measured on the fixed noise, not averaged ones
        noise = torch.Generator().manual_seed(STANDING_SEED)
        z = torch.cat([torch.randn(STANDING_BATCH, 2, generator=noise) for _ in range(STANDING_BATCHES)])
        torch.testing.assert_close(shown.generator[1].running_mean, shown.generator[0](z).mean(dim=0))
    assert all(torch.equal(own[k], v) for k, v in gen.state_dict().items())   # its own weights back, exactly


def test_ttur_gives_the_discriminator_its_own_rate_through_the_decay():
    cfg = tiny("unused", lr=1e-3, d_lr=4e-3, steps=10, lr_decay_start=0.5)
    model = GAN(GANConfig(point_dim=2, hidden=8, depth=1))
    opt_d, opt_g = _optimizers(cfg, model)
    assert (opt_d.param_groups[0]["lr"], opt_g.param_groups[0]["lr"]) == (4e-3, 1e-3)
    for opt in (opt_d, opt_g):          # as if 8 of 10 steps were done: 2 / 5 of the rate is left
        opt.state[opt.param_groups[0]["params"][0]] = {"step": torch.tensor(8.0)}
    decay_lr(cfg, [opt_d, opt_g])
    assert opt_d.param_groups[0]["lr"] == pytest.approx(4e-3 * 0.4)
    assert opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.4)


def test_the_checkpoint_holds_the_average_and_the_state_both(tmp_path):
    train(tiny(tmp_path, data="faces", image_size=32, steps=3, batch_size=4, checkpoint_every=3, sample_every=3))
    path = tmp_path / "checkpoint.safetensors"
    ckpt, state = load_file(path), load_file(state_path(path))
    gen = [k for k in ckpt if k.startswith("generator.")]
    weights = [k for k in gen if "running_" not in k and "num_batches" not in k]   # BatchNorm's are standing
    assert weights and all(torch.equal(ckpt[k], state["ema." + k.removeprefix("generator.")]) for k in weights)
    assert any(not torch.equal(ckpt[k], state["model." + k]) for k in gen if ckpt[k].is_floating_point())
    assert all(torch.equal(ckpt[k], state["model." + k]) for k in ckpt if k.startswith("discriminator."))


def test_killed_and_resumed_run_with_the_options_ends_bit_identical(tmp_path, assert_same_run, interrupted_points):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run = dict(steps=6, checkpoint_every=3, sample_every=6, lr_decay_start=0.3)
    train(tiny(whole, **run))
    with pytest.raises(KeyboardInterrupt):
        train(tiny(parts, **run), data=interrupted_points("ring", ring_modes(), 0.01, at=4))
    train(tiny(parts, resume=True, **run))
    assert_same_run(whole, parts)


def test_the_average_never_steers_so_a_run_resumes_with_another_decay_or_none(tmp_path):
    whole, parts, plain = tmp_path / "whole", tmp_path / "parts", tmp_path / "plain"
    train(tiny(whole, steps=4))
    train(tiny(parts, steps=2))
    train(tiny(parts, steps=4, resume=True, g_ema=0.0))     # the last two steps without the average
    train(tiny(plain, steps=2, g_ema=0.0))
    train(tiny(plain, steps=4, resume=True, g_ema=0.5))     # an average from the resumed weights on
    a, b = (load_file(state_path(run / "checkpoint.safetensors")) for run in (whole, parts))
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("ema."))   # the same training
    ckpt = load_file(parts / "checkpoint.safetensors")
    assert all(torch.equal(ckpt[k], b["model." + k]) for k in ckpt)                # and the raw generator saved
    assert not any(k.startswith("ema.") for k in b)
    assert any(k.startswith("ema.") for k in load_file(state_path(plain / "checkpoint.safetensors")))


@pytest.mark.parametrize("fields, word", [(dict(kind="vae", d_lr=1e-3), "d_lr"), (dict(d_lr=-1.0), "d_lr"),
                                          (dict(kind="wgan-gp", gan_loss="hinge"), "gan_loss"),
                                          (dict(gan_loss="wasserstein"), "gan_loss"), (dict(g_ema=1.0), "g_ema"),
                                          (dict(kind="vae", g_ema=0.9), "g_ema"), (dict(r1=-1.0), "r1"),
                                          (dict(r1=float("nan")), "r1"), (dict(kind="wgan-gp", r1=1.0), "r1"), (dict(r1=True), "r1")])
def test_bad_option_values_are_refused(tmp_path, fields, word):
    base = dict(kind="gan", data="ring", out=str(tmp_path), gan_loss="ns", model_options={})
    if fields.get("kind") == "vae":
        base.update(data="faces")
    with pytest.raises(InputError, match=word):
        TrainConfig(**{**base, **fields})


def test_the_cli_passes_the_options_and_records_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "gan", "--data", "ring", "--out", str(out), "--steps", "2", "--batch-size", "16",
                 "--model-options", '{"hidden": 8, "depth": 1}', "--gan-loss", "hinge", "--d-lr", "4e-4",
                 "--lr", "1e-4", "--g-ema", "0.99", "--r1", "2", "--no-progress"]) == 0
    trained = json.loads(read_info(out / "checkpoint.safetensors").extra["train"])
    assert (trained["gan_loss"], trained["d_lr"], trained["g_ema"], trained["lr"], trained["r1"]) == (
        "hinge", 4e-4, 0.99, 1e-4, 2.0)
