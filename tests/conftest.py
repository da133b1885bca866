"""Shared fixtures: tiny random models saved as checkpoints and exported to ONNX once per session."""
import json
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from latentforge.checkpoint import save_checkpoint, state_path
from latentforge.export import export_onnx
from latentforge.models import DCGAN, ConvVAE, DCGANConfig, VAEConfig

# pytorch/examples dcgan/main.py's Generator, written out as users have it (small widths by default in tests).
EXAMPLES_GENERATOR = textwrap.dedent('''
    class Generator(nn.Module):
        def __init__(self, nz=100, ngf=64, nc=3):
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
                nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

        def forward(self, input):
            return self.main(input)
''')


@pytest.fixture(scope="session")
def examples_generator():
    """(source text, class) of pytorch/examples' DCGAN Generator."""
    namespace = {"nn": torch.nn}
    exec(EXAMPLES_GENERATOR, namespace)
    return EXAMPLES_GENERATOR, namespace["Generator"]


@pytest.fixture
def interrupted_points():
    """make(name, modes, std, at): 2-D point data whose `at`-th batch draw raises KeyboardInterrupt, as a run
    killed mid-step is."""
    from latentforge.training.data.points import PointData

    def make(name: str, modes, std: float, at: int):
        class Interrupted(PointData):
            calls = 0

            def get(self, split, indices):
                Interrupted.calls += 1
                if Interrupted.calls == at:
                    raise KeyboardInterrupt
                return super().get(split, indices)

        return Interrupted(name, modes, std)

    return make


@pytest.fixture
def assert_same_run():
    """Checks that two run folders end with bit-identical checkpoints and training states."""
    def check(a_dir, b_dir):
        for name in ("checkpoint.safetensors", state_path("checkpoint.safetensors").name):
            a, b = load_file(a_dir / name), load_file(b_dir / name)
            assert a.keys() == b.keys() and a, name
            for key in a:
                assert torch.equal(a[key], b[key]), f"{name}: {key}"
    return check


TINY_VAE = VAEConfig(base_channels=8, latent_dim=8, image_size=32)
TINY_DCGAN = DCGANConfig(image_size=32, channels=1, latent_dim=10, ngf=8, ndf=8)


@pytest.fixture(scope="session")
def vae_checkpoint(tmp_path_factory):
    """A tiny random VAE (32 px RGB, 8-d latents) with one attribute direction."""
    torch.manual_seed(0)
    model = ConvVAE(TINY_VAE).eval()
    smile = [0.5] * TINY_VAE.latent_dim
    path = tmp_path_factory.mktemp("vae") / "vae.safetensors"
    return save_checkpoint(path, model, data="random", step=0, extra={"attributes": json.dumps({"smile": smile})})


@pytest.fixture(scope="session")
def dcgan_checkpoint(tmp_path_factory):
    """A tiny random DCGAN (32 px grey, 10-d latents) whose BatchNorm has non-trivial running statistics."""
    torch.manual_seed(0)
    model = DCGAN(TINY_DCGAN)
    model.generator.train()(torch.randn(8, TINY_DCGAN.latent_dim))
    path = tmp_path_factory.mktemp("dcgan") / "dcgan.safetensors"
    return save_checkpoint(path, model.eval(), data="random", step=0)


@pytest.fixture(scope="session")
def vae_onnx(vae_checkpoint):
    return export_onnx(vae_checkpoint, vae_checkpoint.with_suffix(".onnx")).path


@pytest.fixture(scope="session")
def dcgan_onnx(dcgan_checkpoint):
    return export_onnx(dcgan_checkpoint, dcgan_checkpoint.with_suffix(".onnx")).path


@pytest.fixture(scope="session")
def vae_filter_onnx(vae_checkpoint):
    """The tiny VAE's filter graph in the exporter's contract (frame, offset, temperature, eps -> frame_out),
    built here with torch.onnx from a small wrapper, independently of the runtime's own in-memory exporter."""
    import io
    import warnings

    import onnx

    from latentforge.checkpoint import load_checkpoint
    from latentforge.export.parts import build_part
    from latentforge.export.source import source_of

    model, info = load_checkpoint(vae_checkpoint)

    class FrameFilter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = model

        def forward(self, frame, offset, temperature, eps):
            mu, logvar = self.vae.encode(frame.permute(0, 3, 1, 2).float() / 255.0)  # sigmoid VAE: [0, 1]
            z = mu + temperature * torch.exp(0.5 * logvar) * eps + offset
            return torch.round(self.vae.decode(z).clamp(0, 1) * 255.0).to(torch.uint8).permute(0, 2, 3, 1)

    size, dim = TINY_VAE.image_size, TINY_VAE.latent_dim
    example = (torch.zeros(1, size, size, 3, dtype=torch.uint8), torch.zeros(1, dim), torch.zeros(1),
               torch.zeros(1, dim))
    buffer, batch = io.BytesIO(), {0: "n"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(FrameFilter().eval(), example, buffer, dynamo=False,
                          input_names=["frame", "offset", "temperature", "eps"], output_names=["frame_out"],
                          dynamic_axes={"frame": batch, "offset": batch, "eps": batch, "frame_out": batch},
                          opset_version=18)
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in build_part(source_of(model, info), "filter").metadata_at("fp32").items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path = vae_checkpoint.with_name("vae.filter.onnx")
    path.write_bytes(proto.SerializeToString())
    return path
