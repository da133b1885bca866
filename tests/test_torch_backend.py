"""The torch backend on the fused ops: folded BatchNorm, reparam_linear head, to_uint8_image, bf16, CUDA graphs,
checked against each checkpoint's own nn.Module on fresh latents."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from latentforge import latents, load, ops
from latentforge.checkpoint import load_checkpoint
from latentforge.demo import SHIPPED
from latentforge.errors import CheckpointError, InputError
from latentforge.images import to_uint8
from latentforge.runtime.fused import fold_batchnorm, fold_sequence


def reference_decode(path, z):
    module, _ = load_checkpoint(path)
    with torch.inference_mode():
        return module.eval().decode(torch.from_numpy(z)).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(params=["vae", "dcgan"])
def checkpoint(request, vae_checkpoint, dcgan_checkpoint):
    return {"vae": vae_checkpoint, "dcgan": dcgan_checkpoint}[request.param]


def random_batchnorm(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return bn


@pytest.mark.parametrize("conv", [nn.Conv2d(3, 5, 3, padding=1), nn.ConvTranspose2d(3, 5, 4, 2, 1, bias=False)])
def test_folding_batchnorm_keeps_the_function(conv):
    bn = random_batchnorm(5)
    x = torch.randn(2, 3, 6, 6)
    folded = fold_sequence([conv, bn, nn.ReLU()])
    assert [type(m) for m in folded] == [type(conv), nn.ReLU]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), torch.relu(bn(conv(x))), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fold_batchnorm(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 5, 40])
def test_fp32_matches_the_checkpoint_module_on_fresh_latents(checkpoint, n):
    model = load(checkpoint, "torch")
    z = latents(n, model.latent_dim)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to the reference ops would warn: the native ones must run
        got = model.decode_float(z)
        images = model.decode(z)
    np.testing.assert_allclose(got, reference_decode(checkpoint, z), rtol=0, atol=1e-5)
    # The fused uint8 conversion is the runtime's NumPy one, exactly, on the same floats.
    np.testing.assert_array_equal(images, to_uint8(got, model.value_range))


def test_the_fused_ops_run_and_batchnorm_is_folded(dcgan_checkpoint):
    model = load(dcgan_checkpoint, "torch")
    fused = model._decoder.fused
    assert fused.activation == "relu" and fused.bias is not None  # the generator's first BatchNorm went into it
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.body.modules())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model.sample(3, seed=1)
    ran = {event.key for event in prof.key_averages()}
    assert {"latentforge::reparam_linear", "latentforge::to_uint8_image"} <= ran, sorted(ran)


def test_sample_is_decode_of_the_seeds_latents(checkpoint):
    """The seed contract (onnxruntime agreement is in test_runtime): z passes through the fused head unchanged."""
    model = load(checkpoint, "torch")
    for temperature in (1.0, 0.6):
        np.testing.assert_array_equal(model.sample(6, seed=11, temperature=temperature),
                                      model.decode(latents(6, model.latent_dim, seed=11, temperature=temperature)))


@pytest.mark.parametrize("path", ["shipped", "dcgan"])
def test_bf16_is_within_40_db_of_fp32(path, dcgan_checkpoint):
    path = SHIPPED if path == "shipped" else dcgan_checkpoint
    fp32, bf16 = load(path, "torch"), load(path, "torch", precision="bf16")
    z = latents(16, fp32.latent_dim)
    assert psnr(bf16.decode(z), fp32.decode(z)) >= 40.0
    low, high = bf16.decode_float(z), fp32.decode_float(z)
    assert low.dtype == np.float32 and not np.array_equal(low, high)  # bf16 really ran


def test_precision_is_checked(vae_checkpoint, vae_onnx):
    with pytest.raises(InputError, match="precision must be one of 'fp32', 'bf16', got 'int8'"):
        load(vae_checkpoint, "torch", precision="int8")
    with pytest.raises(CheckpointError, match=r"precision 'bf16' loads the variant .*vae\.bf16\.onnx.*latentforge export"):
        load(vae_onnx, "auto", precision="bf16")  # an .onnx's precision variants are the exporter's files
    with pytest.raises(InputError, match="a checkpoint on onnxruntime is exported in memory at fp32"):
        load(vae_checkpoint, "onnxruntime", precision="bf16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_suite.sh on one)")
def test_cuda_graph_replay_matches_eager(checkpoint):
    model = load(checkpoint, "torch")
    decoder = model._decoder
    assert decoder.device.type == "cuda" and decoder._graphs is not None
    for n in (1, 7, 1):
        z = latents(n, model.latent_dim)
        with torch.inference_mode():
            eager = decoder._float(torch.from_numpy(z).cuda()).cpu().numpy()
        np.testing.assert_allclose(model.decode_float(z), eager, rtol=0, atol=1e-6)
        np.testing.assert_allclose(model.decode_float(z), reference_decode(checkpoint, z), rtol=0, atol=1e-4)
    assert {key[1] for key in decoder._graphs.graphs} == {1, 7}


def test_without_the_native_ops_the_backend_runs_the_reference_and_says_so(vae_checkpoint, monkeypatch):
    monkeypatch.setattr(ops.native, "info", None)
    monkeypatch.setattr(ops.native, "error", "compiling csrc/ failed: simulated")
    monkeypatch.setattr(ops.native, "warned", False)
    model = load(vae_checkpoint, "torch")
    z = latents(3, model.latent_dim)
    with pytest.warns(RuntimeWarning, match="unavailable: compiling csrc/ failed: simulated"):
        got = model.decode_float(z)
    np.testing.assert_allclose(got, reference_decode(vae_checkpoint, z), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(model.decode(z), to_uint8(got, model.value_range))
