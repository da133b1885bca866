"""β-VAE options, the held-out bounds (IWAE >= ELBO), MIG, and the measured eyes_open edit."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import latentforge
from latentforge.checkpoint import load_checkpoint
from latentforge.errors import InputError
from latentforge.models import ConvVAE, VAEConfig
from latentforge.training import losses
from latentforge.training.attributes import attribute_directions
from latentforge.training.data import open_data
from latentforge.training.evaluate import vae as eval_vae
from latentforge.training.evaluate.edit_measure import eyes_open_readings, low_half
from latentforge.training.evaluate.mig import mig
from latentforge.training.recipes.vae import kl_weight
from latentforge.training.train import TrainConfig, train

SHIPPED = Path(latentforge.__file__).parent / "weights" / "faces_vae.safetensors"


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_iwae_is_at_least_the_elbo_on_the_same_batch(likelihood):
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=32, base_channels=8, latent_dim=4, likelihood=likelihood)).eval()
    x = torch.rand(6, 3, 32, 32)
    with torch.inference_mode():
        elbo, iwae = eval_vae.bounds(model, x, 16, torch.Generator().manual_seed(1))
        assert (iwae >= elbo - 1e-3).all() and (iwae > elbo).any()
        one_elbo, one_iwae = eval_vae.bounds(model, x, 1, torch.Generator().manual_seed(1))
        torch.testing.assert_close(one_elbo, one_iwae)        # k = 1: the two bounds are the same number
        # ...and log w is log p(x|z) + log p(z) - log q(z|x) at z = mu + sigma * eps, the training loss's sample
        eps = torch.randn(1, 6, 4, generator=torch.Generator().manual_seed(1))[0]
        recon, _ = losses.vae_terms(model, x, eps)
        mu, logvar = model.encode(x)
        z = mu + eps * torch.exp(0.5 * logvar)
        log_q_minus_log_p = (-0.5 * (eps.square() + logvar) + 0.5 * z.square()).sum(1)
        torch.testing.assert_close(one_elbo, -recon - log_q_minus_log_p, rtol=1e-5, atol=1e-3)


def test_evaluate_vae_reports_bounds_and_active_units(tmp_path, monkeypatch, capsys):
    from latentforge.cli import main

    monkeypatch.setattr(eval_vae, "MIG_N", 300)
    run = train(TrainConfig(kind="vae", data="faces", image_size=32, out=str(tmp_path / "run"), steps=4,
                            batch_size=8, beta=4.0, kl_warmup=2, latent_dim=4, progress=False,
                            model_options={"base_channels": 8, "learn_sigma": True}))
    model, _ = load_checkpoint(run.checkpoint)
    assert model.observation_sigma().item() != pytest.approx(0.1)   # learned: moved from its start
    assert main(["evaluate", str(run.checkpoint), "-n", "24", "--k", "8", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "IWAE (k=8)" in out and "active units" in out and "MIG" in out
    import json

    result = json.loads((tmp_path / "e.json").read_text())
    assert result["iwae_nats"] >= result["elbo_nats"]
    assert len(result["kl_per_dim"]) == 4 and 0 <= result["active_units"] <= 4
    assert math.isfinite(result["elbo_bpd"]) and 0 <= result["mig"] <= 1


def test_kl_warmup_ramps_to_beta():
    cfg = TrainConfig(kind="vae", beta=4.0, kl_warmup=4)
    assert [kl_weight(cfg, t) for t in range(6)] == [1.0, 2.0, 3.0, 4.0, 4.0, 4.0]
    assert kl_weight(TrainConfig(kind="vae", beta=2.0), 0) == 2.0
    with pytest.raises(InputError, match="kl_warmup"):
        TrainConfig(kind="vae", kl_warmup=-1)
    with pytest.raises(InputError, match="learn_sigma"):
        VAEConfig(likelihood="bernoulli", learn_sigma=True)


def test_mig_separates_disentangled_from_entangled_codes():
    rng = np.random.default_rng(0)
    factors = rng.random((3000, 3))
    disentangled = np.concatenate([factors[:, [2, 0, 1]], rng.random((3000, 2))], axis=1)
    assert mig(disentangled, factors)["mig"] > 0.5
    assert mig(disentangled, factors)["top_dim"]["factor0"] == 1
    rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    assert mig(factors @ rotation, factors)["mig"] < 0.3
    assert mig(rng.random((3000, 4)), factors)["mig"] < 0.05
    with pytest.raises(InputError):
        mig(rng.random((10, 1)), factors[:10])


def test_eyes_open_edit_opens_the_eyes_of_held_out_faces_monotonically():
    """Measured with the data set's own pixel measure, on the shipped faces VAE."""
    model, info = load_checkpoint(SHIPPED)
    data = open_data("faces")
    directions = attribute_directions(model, info.value_range, data, names=["eyes_open"], n=600)
    images, factors = data.get("test", np.arange(120))
    pick = low_half(factors, "eyes_open")
    readings = eyes_open_readings(model, info.value_range, images[pick], factors[pick], directions["eyes_open"],
                                  amounts=(0.0, 0.75, 1.5))
    assert readings[0] < readings[1] < readings[2]
    assert readings[2] - readings[0] > 0.2


def test_frechet_distance_matches_the_sqrtm_formula_and_survives_dead_features():
    from scipy import linalg

    from latentforge.training.evaluate.readout import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 5))
    b = rng.standard_normal((300, 5)) @ rng.standard_normal((5, 5)) + 0.5
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-9)
    dead = np.zeros((len(a), 3))   # ReLU features that never fire: singular covariances, same distance
    assert frechet_distance(np.hstack([a, dead]), np.hstack([b, dead[:300]])) == pytest.approx(reference, rel=1e-9)
    assert abs(frechet_distance(a, a)) < 1e-9


def test_shipped_faces_readout_reads_the_factors_of_held_out_faces(monkeypatch, tmp_path):
    from latentforge.errors import CheckpointError
    from latentforge.training.evaluate import readout as readout_module
    from latentforge.training.data import open_data

    faces = open_data("faces")
    readout, score = readout_module.readout_for(faces)
    images, factors = faces.get("test", np.arange(300))
    predicted = readout.factors(images)
    eyes = faces.attribute_names.index("eyes_open")
    r = np.corrcoef(predicted[:, eyes], factors[:, eyes])[0, 1]
    assert r > 0.9 and score["r2_eyes_open"] > 0.8   # it reads eye openness off pixels it never saw
    assert readout.features(images[:5]).shape == (5, readout_module.FEATURES)
    monkeypatch.setattr(readout_module, "_shipped_path", lambda data: tmp_path / "gone.safetensors")
    with pytest.raises(CheckpointError, match="python -m latentforge.training.evaluate.readout"):
        readout_module.readout_for(faces)
