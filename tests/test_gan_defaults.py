"""The GAN kinds' own defaults on ring and grid: what `latentforge train KIND --data D` trains with when given no
flag, that an explicit flag wins, that other data keep the general defaults, and that a run records them."""
from __future__ import annotations

import json

import pytest
from latentforge.training.recipes.gans import POINT_DEFAULTS
from latentforge.training.train import FALLBACKS, TrainConfig

from latentforge.checkpoint import read_info
from latentforge.cli import main


@pytest.fixture
def trained_configs(monkeypatch):
    """Runs `latentforge train ...` up to the point of training and keeps the TrainConfig it would train."""
    seen = []

    def fake_train(cfg):
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr("latentforge.training.train.train", fake_train)

    def run(*argv):
        with pytest.raises(SystemExit):
            main(["train", *argv])
        return seen[-1]

    return run


@pytest.mark.parametrize("kind,data", sorted(POINT_DEFAULTS))
def test_the_cli_without_flags_trains_the_kinds_defaults_for_the_data(trained_configs, tmp_path, kind, data, capsys):
    cfg = trained_configs(kind, "--data", data, "--out", str(tmp_path / "run"))
    for name, value in POINT_DEFAULTS[kind, data].items():
        if name == "model_options":
            assert cfg.model_options == value
            model = cfg.model_config({"point_dim": 2})
            assert all(getattr(model, k) == v for k, v in value.items())
        else:
            assert getattr(cfg, name) == value, name
    assert cfg.learning_rate == POINT_DEFAULTS[kind, data]["lr"]
    printed = capsys.readouterr().out
    assert printed.startswith(f"{kind} on {data}: steps {POINT_DEFAULTS[kind, data]['steps']},")


def test_an_explicit_flag_overrides_the_data_default(trained_configs, tmp_path):
    defaults = POINT_DEFAULTS["wgan-gp", "grid"]
    cfg = trained_configs("wgan-gp", "--data", "grid", "--out", str(tmp_path / "run"), "--steps", "7",
                          "--batch-size", "32", "--gp-lambda", "3.5", "--lr", "0.002", "--lr-decay-start", "1",
                          "--critic-steps", "2", "--model-options", '{"hidden": 16}')
    assert (cfg.steps, cfg.batch_size, cfg.gp_lambda, cfg.learning_rate) == (7, 32, 3.5, 0.002)
    assert (cfg.lr_decay_start, cfg.critic_steps) == (1, 2)
    assert cfg.model_options == {**defaults["model_options"], "hidden": 16}
    assert "unroll" not in defaults and cfg.unroll == FALLBACKS["unroll"]   # a field no default names


def test_image_data_keep_the_general_defaults(trained_configs, tmp_path):
    cfg = trained_configs("wgan-gp", "--data", "digits", "--out", str(tmp_path / "run"))
    assert (cfg.steps, cfg.batch_size, cfg.gp_lambda, cfg.lr_decay_start) == (2000, 64, 10.0, 0.5)
    assert cfg.learning_rate == 1e-4 and cfg.model_options == {}


def test_the_checkpoint_records_the_defaults_it_trained_with(tmp_path):
    from latentforge.training.train import train

    cfg = TrainConfig(kind="unrolled-gan", data="ring", out=str(tmp_path / "run"), steps=2, batch_size=8,
                      progress=False, device="cpu", model_options={"hidden": 8, "depth": 1})
    train(cfg)
    recorded = json.loads(read_info(tmp_path / "run" / "checkpoint.safetensors").extra["train"])
    defaults = POINT_DEFAULTS["unrolled-gan", "ring"]
    assert recorded["steps"] == 2 and recorded["lr"] == defaults["lr"]
    assert recorded["unroll"] == defaults.get("unroll", FALLBACKS["unroll"])
    assert recorded["lr_decay_start"] == defaults["lr_decay_start"]


def test_point_scale_puts_both_networks_in_units_of_the_data_spread():
    import torch
    from latentforge.models.gan import GAN, GANConfig

    from latentforge.errors import InputError

    torch.manual_seed(0)
    plain = GAN(GANConfig(point_dim=2, hidden=8, depth=2))
    scaled = GAN(GANConfig(point_dim=2, hidden=8, depth=2, point_scale=2.5))
    scaled.load_state_dict(plain.state_dict())
    z, x = torch.randn(5, plain.config.latent_dim), torch.randn(5, 2)
    torch.testing.assert_close(scaled.generator(z), 2.5 * plain.generator(z))
    torch.testing.assert_close(scaled.discriminator(x), plain.discriminator(x / 2.5))
    torch.testing.assert_close(plain.generator(z), plain.generator.main(z), rtol=0, atol=0)  # scale 1: as before
    with pytest.raises(InputError, match="point_scale"):
        GANConfig(point_dim=2, point_scale=0.0)


@pytest.mark.parametrize("kind", ["wgan-gp", "unrolled-gan"])
def test_a_run_with_the_grid_defaults_resumes_bit_identical(tmp_path, kind, assert_same_run, interrupted_points):
    """The grid defaults (point_scale, a 2-d latent, the kind's lr and penalty) through a kill and a resume."""
    from latentforge.training.data.points import grid_modes
    from latentforge.training.train import train

    def cfg(out, **more):
        return TrainConfig(kind=kind, data="grid", out=str(out), steps=4, batch_size=8, progress=False, device="cpu",
                           model_options={"hidden": 8, "depth": 1}, sample_every=4, checkpoint_every=2, **more)

    assert cfg(tmp_path / "x").model_config({"point_dim": 2}).point_scale == 2.83
    train(cfg(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "parts"), data=interrupted_points("grid", grid_modes(), 0.05, at=3))
    train(cfg(tmp_path / "parts", resume=True))
    assert_same_run(tmp_path / "whole", tmp_path / "parts")
