import random

import numpy as np
import pytest
import torch
from torch import nn

from latentforge.errors import InputError
from latentforge.models import (DCGAN, ConvVAE, DCGANConfig, DCGANGenerator, VAEConfig, build_model,
                                reparam_numpy, reparam_python, reparam_torch)


def test_three_reparam_levels_agree_for_the_same_eps():
    rng = np.random.default_rng()
    mu, logvar, eps = (rng.standard_normal((5, 7)) for _ in range(3))
    z_np = reparam_numpy(mu, logvar, eps)
    z_t = reparam_torch(torch.from_numpy(mu), torch.from_numpy(logvar), torch.from_numpy(eps)).numpy()
    z_py = np.array([reparam_python(list(m), list(lv), list(e)) for m, lv, e in zip(mu, logvar, eps)])
    np.testing.assert_allclose(z_np, z_t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(z_np, z_py, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(z_np, mu + np.exp(0.5 * logvar) * eps, rtol=1e-12)


def test_reparam_draws_noise_when_eps_is_missing():
    random.seed(0)
    z = reparam_python([0.0] * 1000, [0.0] * 1000)
    assert 0.8 < np.std(z) < 1.2
    z = reparam_numpy(np.zeros(4000), np.full(4000, np.log(4.0)), rng=np.random.default_rng(0))
    assert 1.8 < z.std() < 2.2
    z = reparam_torch(torch.zeros(4000), torch.zeros(4000))
    assert 0.9 < z.std().item() < 1.1


def test_torch_reparam_passes_gradients_to_mu_and_logvar_not_eps():
    mu = torch.randn(3, 4, requires_grad=True)
    logvar = torch.randn(3, 4, requires_grad=True)
    eps = torch.randn(3, 4, requires_grad=True)
    reparam_torch(mu, logvar, eps).sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    torch.testing.assert_close(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps.detach())
    assert eps.grad is None


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_vae_shapes_and_value_range(size, channels):
    for output, (lo, hi) in (("sigmoid", (0, 1)), ("tanh", (-1, 1))):
        vae = ConvVAE(VAEConfig(image_size=size, channels=channels, latent_dim=5, base_channels=8, output=output))
        x = torch.rand(2, channels, size, size) * (hi - lo) + lo
        recon, mu, logvar = vae(x)
        assert recon.shape == x.shape and mu.shape == logvar.shape == (2, 5)
        assert recon.min() >= lo and recon.max() <= hi
        assert isinstance(vae.decoder[0], nn.ReLU) and isinstance(vae.from_latent, nn.Linear)
        assert vae.from_latent.out_features == vae.top_channels * 16


@pytest.mark.parametrize("size", [32, 64, 128])
def test_dcgan_shapes(size):
    gan = DCGAN(DCGANConfig(image_size=size, channels=1, latent_dim=7, ngf=4, ndf=4))
    img = gan.generator(torch.randn(3, 7))
    assert img.shape == (3, 1, size, size)
    assert gan.discriminator(img).shape == (3,)
    torch.testing.assert_close(gan.generator.eval()(torch.ones(2, 7)), gan.generator(torch.ones(2, 7, 1, 1)))


def test_examples_netG_pth_loads_into_dcgan_generator(tmp_path, examples_generator):
    theirs = examples_generator[1]().eval()
    for m in theirs.modules():  # non-trivial BatchNorm statistics, so a mismatch would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    torch.save(theirs.state_dict(), tmp_path / "netG.pth")
    ours = DCGANGenerator(DCGANConfig()).eval()
    theirs_sd, ours_sd = theirs.state_dict(), ours.state_dict()
    assert list(theirs_sd) == list(ours_sd)
    assert all(theirs_sd[k].shape == ours_sd[k].shape for k in theirs_sd)
    ours.load_state_dict(torch.load(tmp_path / "netG.pth", weights_only=True), strict=True)
    z = torch.randn(4, 100)
    with torch.no_grad():
        torch.testing.assert_close(ours(z), theirs(z[:, :, None, None]))


@pytest.mark.parametrize("kind,bad,needle", [
    ("vae", {"image_size": 48}, "image_size"),
    ("vae", {"channels": 2}, "channels"),
    ("vae", {"latent_dim": 0}, "latent_dim"),
    ("vae", {"output": "relu"}, "output"),
    ("vae", {"likelihood": "bernoulli", "output": "tanh"}, "bernoulli"),
    ("dcgan", {"image_size": 256}, "image_size"),
    ("dcgan", {"ngf": 0}, "ngf"),
])
def test_bad_config_is_a_clear_error(kind, bad, needle):
    with pytest.raises(InputError, match=needle):
        build_model(kind, bad)
