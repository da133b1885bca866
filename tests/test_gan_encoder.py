"""The gan-encoder: training against a frozen generator (exact resume), the bundled checkpoint on every CPU backend,
its exported encoder and filter graph (parity, uint8 contract, NaN -> 0), the Filter end to end, and mismatches."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from latentforge.export.pipeline import ExportOptions, export
from latentforge.export.source import source_of
from latentforge.models import DCGAN, DCGANConfig
from latentforge.models.gan_encoder import weights_digest
from latentforge.runtime.backends import backend_status
from latentforge.runtime.filter_graph import filter_graph_bytes
from latentforge.training.train import TrainConfig, train
from safetensors.torch import load_file, save_file

from latentforge import Filter, load
from latentforge.checkpoint import load_checkpoint, read_info, save_checkpoint
from latentforge.errors import CheckpointError, InputError, TrainingError
from latentforge.images import from_uint8, to_uint8
from latentforge.latents import latents

GAN = DCGANConfig(image_size=32, channels=3, latent_dim=8, ngf=8, ndf=8)
ENCODER_OPTIONS = {"base_channels": 8, "max_channels": 32}


class DotsData:
    """A tiny RGB ImageData: 32 px, one coloured 10 px square on grey, its place and colour set by the index;
    one attribute, "right" (the square is in the right half)."""

    name = "dots"
    image_size = 32
    channels = 3
    attribute_names = ("right",)

    def __init__(self, n_train: int = 96, n_test: int = 16) -> None:
        self.sizes = {"train": n_train, "test": n_test}

    def size(self, split: str) -> int:
        return self.sizes[split]

    def get(self, split: str, indices) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices) + (self.sizes["train"] if split == "test" else 0)
        images = np.full((len(indices), 32, 32, 3), 128, dtype=np.uint8)
        attrs = np.zeros((len(indices), 1), np.float32)
        for k, i in enumerate(indices):
            r, c = (i * 7) % 22, (i * 5) % 22
            images[k, r:r + 10, c:c + 10] = ((i * 40) % 256, (i * 90) % 256, 255 - (i * 30) % 256)
            attrs[k, 0] = c >= 11
        return images, attrs


@pytest.fixture(scope="module")
def gan_checkpoint(tmp_path_factory):
    """A tiny random RGB DCGAN whose generator BatchNorm has non-trivial running statistics."""
    torch.manual_seed(1)
    model = DCGAN(GAN)
    model.generator.train()(torch.randn(16, GAN.latent_dim))
    return save_checkpoint(tmp_path_factory.mktemp("gan") / "gan.safetensors", model.eval(), data="dots", step=0)


def config(gan, out, **overrides) -> TrainConfig:
    fields = {"kind": "gan-encoder", "source": str(gan), "data": "dots", "out": str(out), "steps": 4, "batch_size": 8,
              "progress": False, "device": "cpu", "sample_every": 4, "checkpoint_every": 2,
              "model_options": ENCODER_OPTIONS, "command": "latentforge train gan-encoder"}
    fields.update(overrides)
    return TrainConfig(**fields)


@pytest.fixture(scope="module")
def encoder_checkpoint(gan_checkpoint, tmp_path_factory):
    result = train(config(gan_checkpoint, tmp_path_factory.mktemp("enc")), data=DotsData())
    return result.checkpoint


def test_training_moves_only_the_encoder_and_logs_its_losses(gan_checkpoint, encoder_checkpoint):
    trained, info = load_checkpoint(encoder_checkpoint)
    gan, _ = load_checkpoint(gan_checkpoint)
    assert info.kind == "gan-encoder" and info.config["generator_kind"] == "dcgan"
    assert info.config["generator_sha256"] == weights_digest(gan.generator) == weights_digest(trained.generator)
    fresh = load_file(encoder_checkpoint)
    assert not any(k.startswith("discriminator.") for k in fresh)   # only what inference needs is shipped
    log = [line for line in (encoder_checkpoint.parent / "log.jsonl").read_text().splitlines() if "pixel_mse" in line]
    assert log and all(key in log[-1] for key in ("feature", "latent_mse"))
    assert "test_psnr" in (encoder_checkpoint.parent / "log.jsonl").read_text()
    assert (encoder_checkpoint.parent / "samples_000004.png").is_file()


def test_killed_and_resumed_run_ends_bit_identical(gan_checkpoint, tmp_path, assert_same_run):
    class Interrupted(DotsData):
        calls = 0

        def get(self, split, indices):
            if split == "train":
                Interrupted.calls += 1
                if Interrupted.calls == 4:   # while drawing step 4's batch, after the step-2 checkpoint
                    raise KeyboardInterrupt
            return super().get(split, indices)

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(config(gan_checkpoint, whole, steps=6, lr_decay_start=0.3), data=DotsData())
    with pytest.raises(KeyboardInterrupt):
        train(config(gan_checkpoint, parts, steps=6, lr_decay_start=0.3), data=Interrupted())
    train(config(gan_checkpoint, parts, steps=6, lr_decay_start=0.3, resume=True), data=DotsData())
    assert_same_run(whole, parts)


def test_resume_against_another_generator_or_loss_weights_is_refused(gan_checkpoint, tmp_path):
    train(config(gan_checkpoint, tmp_path / "run", steps=2), data=DotsData())
    with pytest.raises(TrainingError, match="feature_weight"):
        train(config(gan_checkpoint, tmp_path / "run", steps=4, feature_weight=0.5, resume=True), data=DotsData())
    torch.manual_seed(7)
    other = save_checkpoint(tmp_path / "other.safetensors", DCGAN(GAN).eval(), data="dots", step=0)
    with pytest.raises(TrainingError, match="model.generator_sha256"):
        train(config(other, tmp_path / "run", steps=4, resume=True), data=DotsData())


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_the_bundle_loads_as_one_model_that_encodes_decodes_and_filters(encoder_checkpoint, backend):
    status = backend_status(backend)   # all three come with the README's install (the cpu extra)
    assert status.available, f"{backend}: {status.reason}"
    model = load(encoder_checkpoint, backend=backend, threads=1)
    reference, info = load_checkpoint(encoder_checkpoint)
    frames = DotsData().get("test", np.arange(4))[0]
    mu, logvar = model.encode(frames)
    with torch.inference_mode():
        want = reference.encode(torch.from_numpy(from_uint8(frames, info.value_range)))[0].numpy()
        decoded = to_uint8(reference.decode(torch.from_numpy(latents(3, 8, seed=5))).numpy(), info.value_range)
    assert np.allclose(mu, want, atol=1e-4) and not logvar.any()
    assert np.abs(model.sample(3, seed=5).astype(int) - decoded).max() <= 1   # the same seed, the same faces
    directions = {"right": np.ones(8, np.float32)}
    f = Filter(model, {"right": 1.0}, attributes=directions)
    plain = Filter(model, {"right": 1.0}, attributes=directions, use_graph=False)   # Model.encode/decode twin
    assert f.path == "filter graph"
    for frame in (frames[0], np.zeros((48, 40, 3), np.uint8)):
        out = f(frame)
        assert out.dtype == np.uint8 and out.shape == frame.shape
        assert np.abs(out.astype(int) - plain(frame)).max() <= 1
    f.set_edits({})   # between frames: the edit is gone from the next one
    unedited = f(frames[1])
    assert np.abs(unedited.astype(int) - model.decode(mu[1:2])[0]).max() <= 1
    assert not np.array_equal(unedited, plain(frames[1]))


def test_exported_encoder_and_filter_match_pytorch_on_fresh_inputs(encoder_checkpoint, tmp_path):
    model, info = load_checkpoint(encoder_checkpoint)
    rng = np.random.default_rng()   # fresh inputs every run, beyond the exporter's own check
    frames = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    x = from_uint8(frames, info.value_range)
    encoder = export(encoder_checkpoint, tmp_path / "enc.onnx", ExportOptions(part="encoder"))
    assert encoder.passed
    session = ort.InferenceSession(str(encoder.path), providers=["CPUExecutionProvider"])
    mu, logvar = session.run(None, {"image": x})
    with torch.inference_mode():
        want = model.encode(torch.from_numpy(x))[0].numpy()
    assert np.abs(mu - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())) and not logvar.any()
    filt = export(encoder_checkpoint, tmp_path / "filter.onnx", ExportOptions(part="filter"))
    offset = rng.standard_normal((3, 8)).astype(np.float32)
    feed = {"frame": frames, "offset": offset, "temperature": np.zeros(1, np.float32),
            "eps": rng.standard_normal((3, 8)).astype(np.float32)}
    out = ort.InferenceSession(str(filt.path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    with torch.inference_mode():
        ref = to_uint8(model.decode(torch.from_numpy(want + offset)).numpy(), info.value_range)
    assert out.dtype == np.uint8 and out.shape == (3, 32, 32, 3) and np.abs(out.astype(int) - ref).max() <= 1
    exported = load(filt.path)   # the exported filter graph is a model the Filter runs on its own
    assert Filter(exported).path == "filter graph" and exported.kind == "gan-encoder"


def test_filter_graphs_map_a_nan_output_to_0(encoder_checkpoint, tmp_path):
    model, info = load_checkpoint(encoder_checkpoint)
    with torch.no_grad():   # the generator's first output channel becomes NaN everywhere
        model.generator.main[-2].weight[:, 0] = float("nan")
    exported = export(source_of(model, info), tmp_path / "filter.onnx", ExportOptions(part="filter")).path
    feed = {"frame": np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
            "offset": np.zeros((2, 8), np.float32), "temperature": np.ones(1, np.float32),
            "eps": np.ones((2, 8), np.float32)}
    outs = [ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, feed)[0]
            for graph in (filter_graph_bytes(model, info), str(exported))]
    for out in outs:
        assert out.dtype == np.uint8 and (out[..., 0] == 0).all() and out[..., 1:].any()
    assert np.abs(outs[0].astype(int) - outs[1]).max() <= 1


def test_a_generator_swapped_into_the_bundle_is_refused_in_one_line(encoder_checkpoint, tmp_path):
    tensors = load_file(encoder_checkpoint)
    torch.manual_seed(3)
    other = DCGAN(GAN).generator.state_dict()
    tensors.update({f"generator.{k}": v.contiguous() for k, v in other.items()})
    from safetensors import safe_open

    with safe_open(str(encoder_checkpoint), "pt") as f:
        meta = f.metadata()
    swapped = tmp_path / "swapped.safetensors"
    save_file(tensors, str(swapped), metadata=meta)
    for attempt in (lambda: load(swapped, backend="torch"), lambda: load_checkpoint(swapped)):
        with pytest.raises(CheckpointError, match="trained against generator") as e:
            attempt()
        assert "\n" not in str(e.value)


def test_sources_that_do_not_fit_are_refused_before_training(gan_checkpoint, vae_checkpoint, tmp_path):
    with pytest.raises(InputError, match="inverts a trained GAN: give its checkpoint"):
        train(config(gan_checkpoint, tmp_path / "a", source=None), data=DotsData())
    with pytest.raises(InputError, match="a gan-encoder inverts a GAN's generator"):
        train(config(vae_checkpoint, tmp_path / "b"), data=DotsData())
    small = save_checkpoint(tmp_path / "g64.safetensors", DCGAN(DCGANConfig(ngf=4, ndf=4)).eval(), data="x", step=0)
    with pytest.raises(InputError, match="makes 64 px x 3-channel images but the data are 32 px"):
        train(config(small, tmp_path / "c"), data=DotsData())
    with pytest.raises(InputError, match="drop --latent-dim"):
        train(config(gan_checkpoint, tmp_path / "d", latent_dim=5), data=DotsData())
    assert not any((tmp_path / name).exists() for name in "abcd")
    assert read_info(gan_checkpoint).kind == "dcgan"


def test_cli_filter_runs_the_gan_pair_with_directions_learned_from_labels(encoder_checkpoint, tmp_path):
    import json

    from latentforge.training.attributes import attribute_directions
    from PIL import Image

    from latentforge.cli import main

    model, info = load_checkpoint(encoder_checkpoint)
    directions = attribute_directions(model, info.value_range, DotsData(), n=64)
    assert directions["right"].shape == (8,) and np.isfinite(directions["right"]).all()
    vectors = json.dumps({k: v.tolist() for k, v in directions.items()})
    shipped = save_checkpoint(tmp_path / "pair.safetensors", model, data=info.data, step=info.step,
                              extra=dict(info.extra, attributes=vectors))
    folder = tmp_path / "in"
    folder.mkdir()
    frames = DotsData().get("test", np.arange(3))[0]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i}.png")
    assert main(["filter", str(shipped), "--input", str(folder), "--output", str(tmp_path / "out"),
                 "--edit", "right=1.5", "--no-progress"]) == 0
    written = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "out").iterdir())]
    expected = Filter(load(shipped), {"right": 1.5})
    assert len(written) == 3 and all(np.abs(w.astype(int) - expected(f)).max() <= 1 for w, f in zip(written, frames))


def test_directions_fitted_on_the_generators_samples_move_what_the_labeller_reads(encoder_checkpoint):
    from latentforge.training.attributes import sample_directions

    model, info = load_checkpoint(encoder_checkpoint)
    red = lambda images: images[..., :1].mean(axis=(1, 2)).astype(np.float32)   # one "factor": mean red
    z = latents(200, 8, seed=3)
    red_z = red(to_uint8(model.decode(torch.from_numpy(z)).detach().numpy(), info.value_range))
    low, high = np.quantile(red_z, [0.0, 1.0])   # the split (their midpoint) falls inside what the generator makes
    d = sample_directions(model, info.value_range, red, ["red"], np.array([low]), np.array([high]), n=400)["red"]
    assert d.shape == (8,) and d.dtype == np.float32 and np.linalg.norm(d) > 0.1
    with torch.inference_mode():
        up, down = (to_uint8(model.decode(torch.from_numpy(z + s * d)).numpy(), info.value_range) for s in (1.0, -1.0))
    assert red(up).mean() > red_z.mean() > red(down).mean()
    with pytest.raises(InputError, match="hardly makes that side"):   # a side the generator never makes
        sample_directions(model, info.value_range, red, ["red"], np.array([255.0]), np.array([300.0]), n=100)


def test_a_nan_loss_stops_the_run_before_any_checkpoint(gan_checkpoint, tmp_path):
    class Poisoned(DotsData):
        def get(self, split, indices):
            images, attrs = super().get(split, indices)
            return (np.full(images.shape, np.nan, np.float32) if split == "train" else images), attrs

    with pytest.raises(TrainingError, match="loss became nan at step 1; no checkpoint was written yet"):
        train(config(gan_checkpoint, tmp_path), data=Poisoned())
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_trains_against_a_gan_kind_with_a_spectral_norm_discriminator(tmp_path):
    from latentforge.models.gan import GAN as GANPair
    from latentforge.models.gan import GANConfig

    torch.manual_seed(2)
    pair = GANPair(GANConfig(image_size=32, latent_dim=8, ngf=8, ndf=8, spectral_norm=True))
    gan = save_checkpoint(tmp_path / "sn.safetensors", pair.eval(), data="dots", step=0)
    result = train(config(gan, tmp_path / "run", steps=2), data=DotsData())
    model = load(result.checkpoint, backend="torch")
    assert model.kind == "gan-encoder" and read_info(result.checkpoint).config["generator_kind"] == "gan"
    assert np.isfinite(result.metrics["feature"]) and Filter(model)(np.zeros((32, 32, 3), np.uint8)).shape == (32, 32, 3)


def test_init_from_starts_the_encoder_from_another_gan_encoder(gan_checkpoint, encoder_checkpoint, vae_checkpoint,
                                                               tmp_path):
    result = train(config(gan_checkpoint, tmp_path / "warm", steps=1, lr=1e-12, init_from=str(encoder_checkpoint)),
                   data=DotsData())
    start, warm = load_file(encoder_checkpoint), load_file(result.checkpoint)
    assert all(torch.allclose(start[k], warm[k], atol=1e-6) for k in start if not k.startswith("generator."))
    with pytest.raises(InputError, match="--init-from .* must be a gan-encoder"):
        train(config(gan_checkpoint, tmp_path / "bad", init_from=str(vae_checkpoint)), data=DotsData())


def test_the_shipped_gan_filter_gives_the_same_faces_and_frames_on_every_cpu_backend():
    from latentforge.demo import WEIGHTS

    shipped = WEIGHTS / "faces_gan_filter.safetensors"
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    faces, frames = {}, {}
    for backend in ("torch", "onnxruntime", "openvino"):   # all three come with the README's install
        model = load(shipped, backend=backend, threads=1)
        assert model.kind == "gan-encoder" and "eyes_open" in model.attributes
        faces[backend] = model.sample(4, seed=7).astype(int)
        frames[backend] = Filter(model, {"eyes_open": 1.5})(frame).astype(int)
    for backend, images in faces.items():
        assert np.abs(images - faces["torch"]).max() <= 1
        assert np.abs(frames[backend] - frames["torch"]).max() <= 1
