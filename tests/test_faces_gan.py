"""The shipped faces GAN: its training record, the same image on every CPU backend, the table the demo prints."""
import json

import numpy as np
import pytest
import torch

import latentforge
from latentforge.checkpoint import load_checkpoint, read_info, save_checkpoint
from latentforge.cli import main
from latentforge.demo import COLUMNS, COMPARE_TABLE, SHIPPED_GAN, SHIPPED_GAN_LOG, WEIGHTS, print_comparison
from latentforge.models import MODELS
from latentforge.runtime.backends import backends
from latentforge.training.plots import read_log

CPU_BACKENDS = [b.name for b in backends() if b.available and b.name != "tensorrt"]


def test_shipped_gan_records_how_it_was_trained_and_is_small():
    info = read_info(SHIPPED_GAN)
    assert info.kind == "gan" and info.data == "faces" and info.config["image_size"] == 64
    assert info.extra["command"].startswith("latentforge train gan --data faces")
    assert SHIPPED_GAN.stat().st_size < 8 * 2**20
    logged = [r for r in read_log(SHIPPED_GAN_LOG) if "d_x" in r]
    assert logged and logged[-1]["step"] == info.step   # the log of these weights, with D(x) and D(G(z))
    assert all(0 < r["d_x"] < 1 and 0 < r["d_g_z"] < 1 and r["loss_d"] > 0.01 for r in logged)


@pytest.fixture(scope="module")
def engines():
    return [latentforge.load(SHIPPED_GAN, backend=name) for name in CPU_BACKENDS]


def test_same_seed_gives_the_same_face_on_every_cpu_backend(engines):
    assert {"torch", "onnxruntime"} <= {e.backend for e in engines}
    images = [e.sample(4, seed=7) for e in engines]
    for engine, got in zip(engines, images):
        assert got.dtype == np.uint8 and got.shape == (4, 64, 64, 3), engine.backend
        assert np.abs(got.astype(int) - images[0].astype(int)).max() <= 1, engine.backend
    assert images[0].std() > 30     # faces on a background, not a flat or grey image
    assert not np.array_equal(engines[0].sample(4, seed=8), images[0])


def test_every_backend_matches_the_reference_generator_on_fresh_latents(engines):
    reference, _ = load_checkpoint(SHIPPED_GAN)
    z = latentforge.latents(3, reference.config.latent_dim)   # fresh entropy every run
    with torch.inference_mode():
        expected = reference.generator.eval()(torch.from_numpy(z)).numpy()
    for engine in engines:
        got = engine.decode_float(z)
        np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=2e-4, err_msg=engine.backend)


def test_demo_prints_the_committed_comparison(capsys):
    table = json.loads((WEIGHTS / COMPARE_TABLE).read_text())
    names = [row["name"] for row in table["rows"]]
    assert any(n.startswith("VAE") for n in names) and any(n.startswith("β-VAE") for n in names)
    assert any(n.startswith("VQ-VAE") for n in names) and any(n.startswith("GAN") for n in names)
    print_comparison()
    out = capsys.readouterr().out
    assert all(heading in out for heading, _, _ in COLUMNS)
    assert all(f"| {name} |" in out for name in names)


@pytest.mark.parametrize("kind", ["gan", "wgan-gp", "unrolled-gan"])
def test_every_image_gan_kind_exports_its_generator(tmp_path, kind):
    cls, config = MODELS[kind]
    model = cls(config(image_size=32, channels=3, latent_dim=8, ngf=8, ndf=8)).eval()
    ckpt = save_checkpoint(tmp_path / "g.safetensors", model, data="faces", step=1)
    assert main(["export", str(ckpt), "-o", str(tmp_path / "g.onnx")]) == 0
    z = latentforge.latents(2, 8)
    with torch.inference_mode():
        expected = model.generator(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(latentforge.load(tmp_path / "g.onnx").decode_float(z), expected, atol=1e-5)
