"""The spectrally normalized image discriminator (GANConfig.spectral_norm): layers, norm, training, resume."""
import json

import numpy as np
import pytest
import torch

from latentforge.checkpoint import load_checkpoint
from latentforge.errors import InputError
from latentforge.models.gan import GAN, GANConfig
from latentforge.training.data import open_data
from latentforge.training.train import TrainConfig, train

SMALL = dict(image_size=32, channels=3, latent_dim=8, ngf=8, ndf=8, spectral_norm=True)


def test_the_spectral_discriminator_has_no_normalization_layers_and_unit_norm_convs():
    torch.manual_seed(0)   # power iteration converges at a rate set by the weights' singular-value gap
    disc = GAN(GANConfig(**SMALL)).train().discriminator
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) for m in disc.modules())
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4
    x = torch.randn(4, 3, 32, 32)
    for _ in range(300):   # each training forward pass runs one power iteration per conv
        disc(x)
    for conv in convs:
        assert torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item() == pytest.approx(1.0, abs=0.02)


def test_the_generator_is_the_same_with_or_without_spectral_norm():
    with_sn = GAN(GANConfig(**SMALL)).generator.state_dict()
    without = GAN(GANConfig(**dict(SMALL, spectral_norm=False))).generator.state_dict()
    assert with_sn.keys() == without.keys()


def test_a_non_boolean_spectral_norm_is_refused():
    with pytest.raises(InputError, match="spectral_norm must be true or false"):
        GANConfig(**dict(SMALL, spectral_norm="yes"))


def _config(out, steps, resume=False):
    return TrainConfig(kind="gan", data="faces", out=str(out), steps=steps, batch_size=4, image_size=32,
                       progress=False, device="cpu", model_options={"ngf": 8, "ndf": 8, "spectral_norm": True},
                       sample_every=steps, checkpoint_every=2, log_every=2, resume=resume)


def test_a_spectral_gan_trains_resumes_bit_identical_and_loads(tmp_path, assert_same_run):
    train(_config(tmp_path / "whole", 4))
    train(_config(tmp_path / "parts", 2))
    train(_config(tmp_path / "parts", 4, resume=True))
    assert_same_run(tmp_path / "whole", tmp_path / "parts")
    model, info = load_checkpoint(tmp_path / "whole" / "checkpoint.safetensors")
    assert info.config["spectral_norm"] is True and model.discriminator.main[0].parametrizations.weight
    faces = open_data("faces", image_size=32).get("test", np.arange(2))[0]
    assert model.discriminator(torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1).shape == (2,)


def test_minibatch_std_is_zero_for_copies_and_positive_for_different_samples():
    from latentforge.models.critic import MinibatchStd

    same = torch.randn(1, 5, 4, 4).repeat(8, 1, 1, 1)
    out = MinibatchStd()(same)
    assert out.shape == (8, 6, 4, 4) and torch.equal(out[:, :5], same)
    assert out[:, 5].max().item() < 1e-3
    assert MinibatchStd()(torch.randn(6, 5, 4, 4))[:, 5].min().item() > 0.3   # groups of 3 when 4 does not divide
    disc = GAN(GANConfig(**SMALL, minibatch_std=True)).discriminator
    assert disc(torch.randn(5, 3, 32, 32)).shape == (5,) and disc(torch.randn(1, 3, 32, 32)).shape == (1,)


def test_minibatch_std_with_a_batchnorm_discriminator_is_refused():
    with pytest.raises(InputError, match="minibatch_std needs a discriminator without BatchNorm"):
        GAN(GANConfig(**dict(SMALL, spectral_norm=False, minibatch_std=True)))


def test_a_run_saved_before_a_model_option_existed_resumes_with_its_default(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from latentforge.checkpoint import state_path
    from latentforge.errors import TrainingError

    train(_config(tmp_path, 2))
    spath = state_path(tmp_path / "checkpoint.safetensors")
    with safe_open(str(spath), framework="pt") as f:
        meta = f.metadata()
    run = json.loads(meta["run"])
    del run["model.minibatch_std"]   # as a latentforge without the option wrote it
    save_file(load_file(str(spath)), str(spath), metadata=dict(meta, run=json.dumps(run)))
    assert train(_config(tmp_path, 4, resume=True)).step == 4
    del run["model.ndf"]   # an option that is not at its default still has to match
    train(_config(tmp_path / "other", 2))
    other = state_path(tmp_path / "other" / "checkpoint.safetensors")
    save_file(load_file(str(other)), str(other), metadata=dict(meta, run=json.dumps(run)))
    with pytest.raises(TrainingError, match="model.ndf"):
        train(_config(tmp_path / "other", 4, resume=True))
