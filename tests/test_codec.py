"""The codec: integer tables, the float64 prior twin on torch and onnxruntime, round trips across backends, the
.lfz container's refusals (Hypothesis), the CLI, and the shipped faces-vq model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import latentforge
from latentforge.cli import main
from latentforge.errors import StreamError
from latentforge.runtime import codec_probs as cp

TINY = {"image_size": 32, "base_channels": 8, "codebook_size": 16, "code_dim": 4, "downsample": 3, "res_blocks": 1}


def tiny_prior(path, seed: int):
    from latentforge.checkpoint import save_checkpoint
    from latentforge.models.prior import PriorConfig, VQPrior
    from latentforge.models.vqvae import VQVAEConfig

    torch.manual_seed(seed)
    model = VQPrior(PriorConfig(vqvae=VQVAEConfig(**TINY), width=16, layers=1, heads=2)).eval()
    with torch.no_grad():   # logits spread over several nats, as a trained prior's are
        model.transformer.head.weight.mul_(20)
    save_checkpoint(path, model, data="faces", step=0)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("codec")
    path = tiny_prior(root / "prior.safetensors", 0)
    other = tiny_prior(root / "other.safetensors", 1)
    loaded = {b: latentforge.load(path, backend=b, threads=1) for b in ("torch", "onnxruntime")}
    return path, other, loaded


def images(n: int, seed: int = 0, side: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_weight_table_is_far_from_rounding_edges():
    exact = [2.0 ** 20 * math.exp(-d * cp.STEP) for d in range(len(cp.WEIGHTS))]
    assert min(abs(v - math.floor(v) - 0.5) for v in exact) > 1e-6   # vs ~2e-10, one ulp at 2**20
    assert cp.WEIGHTS[0] == 2 ** 20 and (np.diff(cp.WEIGHTS) <= 0).all()


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 600), st.integers(0, 2 ** 32 - 1), st.floats(0.1, 30))
def test_frequencies_are_positive_and_sum_to_the_precision(k, seed, spread):
    logits = np.random.default_rng(seed).standard_normal((3, k)) * spread
    distance, _ = cp.grid_logits(logits)
    freq = cp.frequencies(distance)
    assert (freq >= 1).all() and (freq.sum(1) == 1 << cp.PRECISION).all()
    assert (freq.argmax(1) == distance.argmin(1)).all()
    assert (cp.uniform(2, k).sum(1) == 1 << cp.PRECISION).all()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_a_logit_moved_less_than_the_margin_changes_no_unflagged_table(seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((8, 64)) * 5
    logits[0, 3] = (np.floor(logits[0].max() / cp.STEP) + 0.5) * cp.STEP + cp.MARGIN / 4   # on an edge: flagged
    moved = logits + rng.uniform(-1, 1, logits.shape) * cp.MARGIN * 0.99
    d1, unsafe = cp.grid_logits(logits)
    d2, _ = cp.grid_logits(moved)
    assert unsafe[0]
    assert (d1[~unsafe] == d2[~unsafe]).all()


def test_nan_logits_are_refused():
    with pytest.raises(latentforge.NumericalError):
        cp.grid_logits(np.array([[0.0, np.nan]]))


def test_float64_step_agrees_across_torch_and_onnxruntime(models):
    from latentforge.checkpoint import load_checkpoint
    from latentforge.export.codec import exact_step_graph
    from latentforge.export.graph import ort_runner
    from latentforge.export.vq import step_inputs
    from latentforge.models.prior import exact_step

    module, _ = load_checkpoint(models[0])
    step = exact_step(module.transformer)
    run = ort_runner(exact_step_graph(step))
    feeds = step_inputs(step, 3, np.random.default_rng(5))
    feeds["cache"] = feeds["cache"].astype(np.float64)
    with torch.inference_mode():
        ref = step(*(torch.from_numpy(v) for v in feeds.values()))[0].numpy()
    got = run(feeds)["logits"]
    assert got.dtype == np.float64 and np.abs(got - ref).max() < cp.MARGIN / 100


@pytest.mark.parametrize("encoder,decoder", [("torch", "onnxruntime"), ("onnxruntime", "torch")])
def test_round_trip_across_backends_is_the_models_own_reconstruction(models, encoder, decoder):
    _, _, loaded = models
    x = images(3)
    data = loaded[encoder].compress(x)
    assert data == loaded[decoder].compress(x)   # same bytes whichever backend encodes
    codes = latentforge.runtime.codec.decompress_symbols(data, loaded[decoder])
    assert np.array_equal(codes, loaded[decoder].encode(x))
    assert np.array_equal(latentforge.decompress(data, loaded[decoder]), loaded[decoder].decode_codes(codes))


def test_another_models_stream_is_refused_naming_both_fingerprints(models):
    _, other, loaded = models
    data = loaded["torch"].compress(images(1))
    them = latentforge.load(other, backend="torch", threads=1)
    with pytest.raises(StreamError, match=r"written by model [0-9a-f]{16}, and this is model [0-9a-f]{16}") as e:
        latentforge.decompress(data, them)
    assert "\n" not in str(e.value)


def test_a_model_without_a_prior_cannot_compress(tmp_path):
    from latentforge.checkpoint import save_checkpoint
    from latentforge.models.vqvae import VQVAE, VQVAEConfig

    save_checkpoint(tmp_path / "vq.safetensors", VQVAE(VQVAEConfig(**TINY)), data="faces", step=0)
    with pytest.raises(latentforge.InputError, match="cannot compress"):
        latentforge.load(tmp_path / "vq.safetensors", backend="torch").compress(images(1))


def _mutate(data: bytes, how: str, at: int, value: int, fix_crc: bool) -> bytes:
    import zlib

    at %= len(data)
    if how == "flip":
        out = data[:at] + bytes([data[at] ^ (1 + value % 255)]) + data[at + 1:]
    elif how == "truncate":
        out = data[:at]
    elif how == "insert":
        out = data[:at] + bytes([value % 256]) + data[at:]
    else:
        out = np.random.default_rng(value).integers(0, 256, at + 1, dtype=np.uint8).tobytes()
    if fix_crc and len(out) > 4:   # reach the checks behind the CRC
        out = out[:-4] + zlib.crc32(out[:-4]).to_bytes(4, "little")
    return out


@pytest.fixture(scope="module")
def stream(models):
    x = images(2, seed=3)
    return models[2]["torch"].compress(x), models[2]["torch"].encode(x)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(how=st.sampled_from(["flip", "truncate", "insert", "random"]), at=st.integers(0, 10 ** 6),
       value=st.integers(0, 2 ** 32 - 1), fix_crc=st.booleans())
def test_mutated_streams_decode_exactly_or_are_refused_in_one_line(models, stream, how, at, value, fix_crc):
    data, codes = stream
    bad = _mutate(data, how, at, value, fix_crc)
    try:
        got = latentforge.runtime.codec.decompress_symbols(bad, models[2]["torch"])
    except StreamError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert np.array_equal(got, codes)   # only a mutation that changed nothing that matters may decode


def test_cli_round_trip_and_no_partial_output(models, tmp_path, capsys):
    from PIL import Image

    path = models[0]
    for i, image in enumerate(images(2, seed=9)):
        Image.fromarray(image).save(tmp_path / f"in{i}.png")
    out = tmp_path / "x.lfz"
    assert main(["compress", str(path), str(tmp_path / "in0.png"), str(tmp_path / "in1.png"), "-o", str(out),
                 "--backend", "onnxruntime", "--threads", "1"]) == 0
    (tmp_path / "d").mkdir()
    assert main(["decompress", str(out), "-o", str(tmp_path / "d"), "--model", str(path), "--backend", "torch"]) == 0
    got = np.stack([np.asarray(Image.open(tmp_path / "d" / f"x_{i:04d}.png")) for i in range(2)])
    model = latentforge.load(path, backend="torch")
    assert np.array_equal(got, model.decode_codes(model.encode(images(2, seed=9))))
    (tmp_path / "cut.lfz").write_bytes(out.read_bytes()[:-3])
    (tmp_path / "e").mkdir()
    capsys.readouterr()
    assert main(["decompress", str(tmp_path / "cut.lfz"), "-o", str(tmp_path / "e"), "--model", str(path)]) == 2
    assert "CRC32" in capsys.readouterr().err and not list((tmp_path / "e").iterdir())
    assert main(["compress", str(path), str(tmp_path / "in0.png"), "-o", str(tmp_path / "x.jpg")]) == 2


def test_vae_latent_points_round_trip_across_backends(tmp_path):
    from safetensors.numpy import save

    from latentforge.checkpoint import save_checkpoint
    from latentforge.models import ConvVAE, VAEConfig
    from latentforge.runtime.codec_latent import fit_table, tables_path

    torch.manual_seed(0)
    path = tmp_path / "vae.safetensors"
    save_checkpoint(path, ConvVAE(VAEConfig(base_channels=4, latent_dim=8, image_size=32)), data="faces", step=0)
    latents = np.random.default_rng(0).standard_normal((500, 8)) * 0.3
    tables = {"freq_q1": fit_table(latents, 0.5), "freq_q2": fit_table(latents, 0.1)}
    assert all((t.sum(1) == 1 << cp.PRECISION).all() and (t >= 1).all() for t in tables.values())
    tables_path(path).write_bytes(save(tables, metadata={"latentforge.codec_steps": '{"1": 0.5, "2": 0.1}'}))
    on = {b: latentforge.load(path, backend=b, threads=1) for b in ("torch", "onnxruntime")}
    x = images(4)
    sizes = []
    for quality in (1, 2):
        data = on["onnxruntime"].compress(x, quality=quality)
        sizes.append(len(data))
        mu = on["torch"].encode(x)[0]
        step = (0.5, 0.1)[quality - 1]
        assert np.array_equal(latentforge.runtime.codec.decompress_symbols(data, on["torch"]), np.round(mu / step))
        got = latentforge.decompress(data, on["torch"])
        assert np.array_equal(got, on["torch"].decode((np.round(mu / step) * step).astype(np.float32)))
    assert sizes[0] < sizes[1]
    with pytest.raises(StreamError, match="written by model"):   # other tables are another model
        tables["freq_q2"][:, 0] += 1
        tables["freq_q2"][np.arange(8), tables["freq_q2"].argmax(1)] -= 1
        tables_path(path).write_bytes(save(tables, metadata={"latentforge.codec_steps": '{"1": 0.5, "2": 0.1}'}))
        latentforge.decompress(data, latentforge.load(path, backend="torch"))


def test_shipped_faces_codec_round_trips_across_backends():
    """The real prior (512 codes, 16x16 grid) on real held-out faces: encoded on onnxruntime, decoded on torch."""
    from latentforge.runtime.codec_models import load_codec_model
    from latentforge.training.data import open_data

    x, _ = open_data("faces").get("test", np.arange(2))
    on_ort, on_torch = (load_codec_model("faces", b, threads=1)[0] for b in ("onnxruntime", "torch"))
    data = on_ort.compress(x)
    assert 8 * len(data) / (2 * 64 * 64) < 0.3   # ~2.5 bits a code, 256 codes, plus the header
    assert np.array_equal(latentforge.runtime.codec.decompress_symbols(data, on_torch), on_ort.encode(x))


def test_bd_rate_of_known_curves():
    from latentforge.training.evaluate.bdrate import bd_rate, pareto

    psnr = np.array([26.0, 29.0, 32.0, 35.0, 38.0])
    rate = 0.05 * 10 ** (psnr / 12)
    assert bd_rate(rate, psnr, rate / 2, psnr) == pytest.approx(-0.5, abs=1e-9)
    assert bd_rate(rate, psnr, rate * 1.25, psnr + 0.0) == pytest.approx(0.25, abs=1e-9)
    # the same curve sampled at other points, over a partial overlap: no difference
    other = np.array([30.0, 31.0, 33.5, 36.0, 40.0])
    assert bd_rate(rate, psnr, 0.05 * 10 ** (other / 12), other) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(latentforge.InputError, match="do not overlap"):
        bd_rate(rate, psnr, rate, psnr + 20)
    with pytest.raises(latentforge.InputError, match=">= 4 points"):
        bd_rate(rate[:3], psnr[:3], rate, psnr)
    r, q = pareto([3, 1, 2, 4], [30, 25, 24, 31])
    assert list(r) == [1, 3, 4] and list(q) == [25, 30, 31]
