"""The GAN kinds: mode metrics with known answers, the 2-D data, the unrolled and penalty pieces against
references, the collapse detector, the divergence guard, resume, and sample/evaluate end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from latentforge.checkpoint import save_checkpoint
from latentforge.cli import main
from latentforge.errors import InputError, TrainingError
from latentforge.models.gan import GAN, GANConfig, UnrolledGAN, WGANGP
from latentforge.training.data import open_data
from latentforge.training.data.points import PointData, grid_modes, ring_modes
from latentforge.training.evaluate.modes import class_mode_stats, point_mode_stats
from latentforge.training.recipes.gan_monitor import monitor
from latentforge.training.recipes.gans import gradient_penalty, unrolled_params
from latentforge.training.train import TrainConfig, train

KINDS = ("gan", "wgan-gp", "unrolled-gan")
TINY_POINTS = {"hidden": 16, "depth": 2}


def near(modes, picks, std, rng, spread=1.0):
    """Samples around modes[picks], each within `spread` std per coordinate."""
    return modes[picks] + rng.uniform(-spread, spread, size=(len(picks), 2)) * std


# --- metrics with known answers ---------------------------------------------------------------------------

def test_samples_from_three_of_eight_modes_capture_three():
    rng = np.random.default_rng(0)
    modes = ring_modes()
    points = near(modes, np.repeat([0, 3, 5], 100), 0.01, rng)
    stats = point_mode_stats(points, modes, 0.01)
    assert stats["modes"] == 3 and stats["total_modes"] == 8
    assert stats["hq_percent"] == 100.0
    assert stats["counts"] == [100, 0, 0, 100, 0, 100, 0, 0]
    assert stats["reverse_kl"] == pytest.approx(math.log(8 / 3))


def test_all_modes_evenly_give_full_coverage_and_zero_kl():
    rng = np.random.default_rng(1)
    modes = grid_modes()
    stats = point_mode_stats(near(modes, np.repeat(np.arange(25), 100), 0.05, rng), modes, 0.05)
    assert (stats["modes"], stats["hq_percent"]) == (25, 100.0)
    assert stats["reverse_kl"] == pytest.approx(0.0, abs=1e-12)


def test_off_mode_points_are_low_quality_and_capture_nothing():
    modes = ring_modes()
    # half exactly on mode 2, half 4 std away from mode 6 (outside the 3-std ball): 50% HQ, 1 mode
    on = np.repeat(modes[[2]], 50, axis=0)
    off = modes[[6]] + np.array([[0.04, 0.0]])
    stats = point_mode_stats(np.concatenate([on, np.repeat(off, 50, axis=0)]), modes, 0.01)
    assert (stats["modes"], stats["hq_percent"]) == (1, 50.0)
    assert point_mode_stats(np.zeros((10, 2)), modes, 0.01)["reverse_kl"] is None   # the centre: no HQ at all


def test_the_true_distribution_scores_as_the_protocol_expects():
    for name, k in (("ring", 8), ("grid", 25)):
        data = open_data(name)
        points, _ = data.get("test", np.arange(2500))
        stats = point_mode_stats(points, data.modes, data.std)
        # within 3 std in 2-D: 1 - exp(-4.5) = 98.9% of a Gaussian's mass
        assert stats["modes"] == k and 97.5 < stats["hq_percent"] < 99.8
        assert stats["reverse_kl"] < 0.02


def test_mode_metrics_refuse_bad_points():
    with pytest.raises(InputError, match="NaN or Inf"):
        point_mode_stats(np.array([[np.nan, 0.0]]), ring_modes(), 0.01)
    with pytest.raises(InputError, match=r"\[n, 2\]"):
        point_mode_stats(np.zeros((4, 3)), ring_modes(), 0.01)


def test_class_modes_and_kl():
    stats = class_mode_stats(np.array([0, 0, 7, 7, 999, 999]), 1000)
    assert stats["modes"] == 3 and stats["reverse_kl"] == pytest.approx(math.log(1000 / 3))
    with pytest.raises(InputError):
        class_mode_stats(np.array([1000]), 1000)


# --- data ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, k, std, spacing", [("ring", 8, 0.01, None), ("grid", 25, 0.05, 2.0)])
def test_point_data_is_the_protocol_mixture(name, k, std, spacing):
    data = open_data(name, seed=3)
    assert (len(data.modes), data.std) == (k, std)
    if name == "ring":
        assert np.allclose(np.linalg.norm(data.modes, axis=1), 1.0)
    else:
        assert sorted(set(data.modes[:, 0])) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    x, attributes = data.get("train", np.arange(40000))
    assert x.dtype == np.float32 and x.shape == (40000, 2) and attributes.shape == (40000, 0)
    nearest = ((x[:, None] - data.modes[None]) ** 2).sum(-1).argmin(1)
    assert np.bincount(nearest, minlength=k).min() > 40000 / k * 0.85          # equal weights
    assert np.std(x - data.modes[nearest], axis=0) == pytest.approx([std, std], rel=0.05)
    again, _ = data.get("train", np.array([17, 3]))
    assert np.array_equal(again, x[[17, 3]])                                     # point i depends on i alone
    assert not np.array_equal(open_data(name, seed=4).get("train", np.arange(5))[0], x[:5])


def test_stacked_digits_stack_three_digits_with_their_class():
    data = open_data("stacked-digits")
    images, labels = data.get("train", np.arange(6))
    digits = open_data("digits")
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (6, 1) and labels.max() < 1000
    # every channel is one of the digits' train images
    train_images, _ = digits.get("train", np.arange(digits.size("train")))
    for channel in range(3):
        assert any(np.array_equal(images[0, :, :, channel], d[:, :, 0]) for d in train_images)


def test_point_data_with_an_image_kind_is_refused():
    with pytest.raises(InputError, match="vae cannot train on 'ring', which is 2-D point data; use one of gan"):
        TrainConfig(kind="vae", data="ring")


# --- the pieces against references ---------------------------------------------------------------------------

def test_one_unrolled_step_is_exactly_adams_step():
    """The differentiable Adam of the unrolled GAN must move D as torch.optim.Adam does (its reference)."""
    torch.manual_seed(0)
    model = UnrolledGAN(GANConfig(point_dim=2, **TINY_POINTS))
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-2, betas=(0.5, 0.999))
    for _ in range(2):  # give Adam non-trivial moments first
        real, fake = torch.randn(32, 2), torch.randn(32, 2)
        from latentforge.training.losses import discriminator_loss
        loss = discriminator_loss(model.discriminator(real), model.discriminator(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ahead = {k: v.detach().clone() for k, v in unrolled_params(model.discriminator, opt, real, fake, 1).items()}
    loss = discriminator_loss(model.discriminator(real), model.discriminator(fake))
    opt.zero_grad()
    loss.backward()
    opt.step()
    for name, p in model.discriminator.named_parameters():
        torch.testing.assert_close(ahead[name], p.detach(), rtol=1e-5, atol=1e-6)


def test_unrolled_parameters_carry_the_generators_gradient():
    torch.manual_seed(0)
    model = UnrolledGAN(GANConfig(point_dim=2, **TINY_POINTS))
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-2)
    fake = model.generator(torch.randn(16, model.config.latent_dim))
    ahead = unrolled_params(model.discriminator, opt, torch.randn(16, 2), fake, 3)
    grads = torch.autograd.grad(sum(v.sum() for v in ahead.values()), list(model.generator.parameters()))
    assert any(g.abs().sum() > 0 for g in grads)


def test_gradient_penalty_of_a_linear_critic():
    w = torch.tensor([3.0, 4.0])   # |grad| = 5 everywhere: penalty (5 - 1)^2 = 16
    gp = gradient_penalty(lambda x: x @ w, torch.randn(8, 2), torch.randn(8, 2), torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx(16.0)


# --- training ------------------------------------------------------------------------------------------------

def tiny(kind, out, data="ring", **overrides):
    options = TINY_POINTS if data in ("ring", "grid") else {"ngf": 8, "ndf": 8}
    fields = dict(kind=kind, data=data, out=str(out), steps=4, batch_size=16, progress=False, device="cpu",
                  model_options=options, sample_every=2, checkpoint_every=2, log_every=2, unroll=2, critic_steps=2)
    fields.update(overrides)
    return TrainConfig(**fields)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("data", ["ring", "grid"])
def test_each_trainer_runs_on_point_data(tmp_path, kind, data):
    result = train(tiny(kind, tmp_path, data))
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "modes" in r] == [2, 4]
    key = "wasserstein" if kind == "wgan-gp" else "d_x"
    assert any(key in r for r in logged) and key in result.metrics
    for name in ("samples_000002.png", "samples_000004.png", "curves.png", "checkpoint.safetensors"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("kind, data", [("gan", "digits"), ("wgan-gp", "stacked-digits"), ("unrolled-gan", "faces")])
def test_each_trainer_runs_on_images(tmp_path, kind, data):
    result = train(tiny(kind, tmp_path, data, steps=2, batch_size=4, image_size=32))
    assert result.step == 2 and (tmp_path / "samples_000002.png").exists()
    if data == "stacked-digits":
        assert 0 <= result.metrics["modes"] <= 1000   # the collapse detector reads the digit classifier


def test_the_wgan_critic_has_no_batchnorm():
    critic = WGANGP(GANConfig(image_size=32, channels=3, ngf=8, ndf=8)).discriminator
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in critic.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in critic.modules())


@pytest.mark.parametrize("kind", KINDS)
def test_killed_and_resumed_gan_ends_bit_identical(tmp_path, kind, assert_same_run, interrupted_points):
    """Killed mid-run (here: interrupted while drawing step 4's batch), with the lr schedule half way down."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(tiny(kind, whole, steps=6, checkpoint_every=3, sample_every=6, lr_decay_start=0.3))
    with pytest.raises(KeyboardInterrupt):
        train(tiny(kind, parts, steps=6, checkpoint_every=3, sample_every=6, lr_decay_start=0.3),
              data=interrupted_points("ring", ring_modes(), 0.01, at=4))
    train(tiny(kind, parts, steps=6, checkpoint_every=3, sample_every=6, lr_decay_start=0.3, resume=True))
    assert_same_run(whole, parts)


def test_resume_with_another_unroll_is_refused(tmp_path):
    train(tiny("unrolled-gan", tmp_path, steps=2))
    with pytest.raises(TrainingError, match="unroll"):
        train(tiny("unrolled-gan", tmp_path, steps=4, unroll=3, resume=True))


def test_a_discriminator_that_wins_outright_stops_the_run(tmp_path, monkeypatch):
    """A generator that cannot move (reset to output 0 after every step) against data at (1000, 1000)."""
    import dataclasses

    from latentforge.training.recipes.gans import gan_step
    from latentforge.training.recipes import RECIPES

    def frozen_generator_step(cfg, model, optimizers, x, noise):
        metrics = gan_step(cfg, model, optimizers, x, noise)
        with torch.no_grad():
            model.generator.main[-1].weight.zero_()
            model.generator.main[-1].bias.zero_()
        return metrics

    monkeypatch.setitem(RECIPES, "gan", dataclasses.replace(RECIPES["gan"], step=frozen_generator_step))
    far = PointData("far", np.array([[1000.0, 1000.0]]), 1.0)
    with pytest.raises(TrainingError, match=r"loss_d is stuck at .* discriminator wins outright.*"
                                            r"kept the last good checkpoint at step \d+"):
        train(tiny("gan", tmp_path, steps=200, log_every=5, checkpoint_every=5, sample_every=200, lr=0.01,
                   lr_decay_start=1.0), data=far)


def test_nan_data_stops_with_the_last_good_checkpoint(tmp_path):
    class Poisoned(PointData):
        calls = 0

        def get(self, split, indices):
            Poisoned.calls += 1
            points, attributes = super().get(split, indices)
            return (points * np.nan if Poisoned.calls > 2 else points), attributes

    data = Poisoned("ring", ring_modes(), 0.01)
    with pytest.raises(TrainingError, match="became nan at step 3; kept the last good checkpoint at step 2"):
        train(tiny("wgan-gp", tmp_path, steps=6, checkpoint_every=2), data=data)


def constant_generator(kind, point):
    """A point model whose generator puts every sample exactly on `point`: total collapse."""
    model = {"gan": GAN, "wgan-gp": WGANGP, "unrolled-gan": UnrolledGAN}[kind](GANConfig(point_dim=2, **TINY_POINTS))
    with torch.no_grad():
        last = model.generator.main[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor(point))
    return model


def test_collapse_detector_warns_when_coverage_falls(tmp_path):
    cfg = tiny("gan", tmp_path)
    data = open_data("ring")
    found, warning = monitor(cfg, constant_generator("gan", [1.0, 0.0]), data, 10, tmp_path, [{"step": 5, "modes": 8}])
    assert found == {"modes": 1, "hq_percent": 100.0, "reverse_kl": pytest.approx(math.log(8))}
    assert warning.startswith("mode coverage fell to 1 (best 8 at step 5)")
    assert (tmp_path / "samples_000010.png").stat().st_size > 0
    assert monitor(cfg, constant_generator("gan", [1.0, 0.0]), data, 11, tmp_path, [{"step": 5, "modes": 1}])[1] is None


# --- sample and evaluate end to end -------------------------------------------------------------------------------

@pytest.fixture
def collapsed_checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "ring.safetensors", constant_generator("wgan-gp", [0.0, 1.0]), data="ring", step=7)


def test_sample_writes_float_points(collapsed_checkpoint, tmp_path, capsys):
    out = tmp_path / "pts.npy"
    assert main(["sample", str(collapsed_checkpoint), "-n", "2500", "--seed", "3", "-o", str(out)]) == 0
    points = np.load(out)
    assert points.dtype == np.float32 and points.shape == (2500, 2)
    assert np.allclose(points, [0.0, 1.0])
    assert main(["sample", str(collapsed_checkpoint), "-n", "5", "-o", str(tmp_path / "p.png")]) == 2
    assert "point model" in capsys.readouterr().err and not (tmp_path / "p.png").exists()


def test_evaluate_cli_gives_the_protocol_numbers(collapsed_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(collapsed_checkpoint), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "modes captured" in printed and "1/8" in printed
    result = json.loads(out.read_text())
    assert (result["kind"], result["data"], result["step"]) == ("wgan-gp", "ring", 7)
    assert (result["modes"], result["hq_percent"], result["samples"]) == (1, 100.0, 2500)
    assert result["reverse_kl"] == pytest.approx(math.log(8))


def test_evaluate_a_trained_tiny_point_gan(tmp_path, capsys):
    train(tiny("gan", tmp_path / "run", steps=2))
    assert main(["evaluate", str(tmp_path / "run" / "checkpoint.safetensors"), "-n", "300"]) == 0
    assert "high-quality samples" in capsys.readouterr().out


# --- image-level metrics ------------------------------------------------------------------------------------------

def test_precision_recall_known_answers():
    from latentforge.training.evaluate.features import precision_recall

    rng = torch.Generator().manual_seed(0)
    real = torch.randn(200, 4, generator=rng, dtype=torch.float64)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far) == (0.0, 0.0)
    # fakes from half of the real cloud: all precise, and they cover little more than that half
    half = real[real[:, 0] > 0]
    precision, recall = precision_recall(real, half)
    assert precision == 1.0 and recall < 0.75


def test_digit_classifier_reads_held_out_digits():
    from safetensors import safe_open

    from latentforge.training.evaluate.digit_classifier import predict, weights_path

    digits = open_data("digits")
    images, labels = digits.get("test", np.arange(digits.size("test")))
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    accuracy = (predict(x) == labels[:, 0]).mean()
    with safe_open(str(weights_path()), framework="pt") as f:
        stored = float(f.metadata()["test_accuracy"])
    assert accuracy == pytest.approx(stored, abs=1e-3) and accuracy > 0.95


def test_evaluate_an_image_gan_gives_fd_and_precision_recall(tmp_path, capsys):
    model = GAN(GANConfig(image_size=32, channels=1, latent_dim=8, ngf=8, ndf=8))
    ckpt = save_checkpoint(tmp_path / "digits.safetensors", model.eval(), data="digits", step=1)
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(ckpt), "-n", "100", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 100 and result["fd"] > 0 and 0 <= result["precision"] <= 1
    assert "FD (domain features)" in capsys.readouterr().out


def test_fd_of_the_data_against_itself_is_near_zero():
    from latentforge.training.evaluate.features import feature_net, frechet_distance

    digits = open_data("digits")
    images, _ = digits.get("test", np.arange(200))
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    net, _ = feature_net("digits", 1, 32)
    assert frechet_distance(net, x, x) == pytest.approx(0.0, abs=1e-3)
    assert frechet_distance(net, x[:100], -x[100:]) > 1.0


def test_a_point_model_is_not_exported_as_an_image_generator(collapsed_checkpoint, tmp_path, capsys):
    assert main(["export", str(collapsed_checkpoint), "-o", str(tmp_path / "g.onnx")]) == 2
    assert "point model" in capsys.readouterr().err and not (tmp_path / "g.onnx").exists()


def test_an_image_gan_samples_to_png(tmp_path, capsys):
    model = WGANGP(GANConfig(image_size=32, channels=3, latent_dim=8, ngf=8, ndf=8))
    ckpt = save_checkpoint(tmp_path / "faces.safetensors", model.eval(), data="faces", step=1)
    assert main(["sample", str(ckpt), "-n", "4", "--seed", "1", "-o", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0 and "4 images" in capsys.readouterr().out
