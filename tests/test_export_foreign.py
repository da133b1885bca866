"""Foreign generators: a user's own module + weights, and a pytorch/examples netG.pth, exported without edits."""
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch

from latentforge.cli import main
from latentforge.errors import CheckpointError, InputError
from latentforge.export.foreign import dcgan_examples_source, foreign_source
from latentforge.export.pipeline import ExportOptions, export
from latentforge.latents import latents

# What users have, beside pytorch/examples' dcgan/main.py Generator (the examples_generator fixture):
# an MLP generator, and a generator whose first layer is a Conv (latent shape not inferable).
OTHER_MODELS = textwrap.dedent('''
    class MLPGenerator(nn.Module):
        def __init__(self, nz=12, side=8):
            super().__init__()
            self.side = side
            self.net = nn.Sequential(nn.Linear(nz, 64), nn.ReLU(), nn.Linear(64, side * side), nn.Sigmoid())

        def forward(self, z):
            return self.net(z).view(-1, 1, self.side, self.side)

    class ConvFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 3, 3, padding=1)

        def forward(self, x):
            return torch.tanh(self.conv(x))
''')


@pytest.fixture()
def user_models(tmp_path, monkeypatch, examples_generator):
    source = "import torch\nfrom torch import nn\n" + examples_generator[0] + OTHER_MODELS
    (tmp_path / "user_models.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import user_models
    return importlib.reload(user_models)


@pytest.fixture()
def net_g(user_models, tmp_path):
    torch.manual_seed(0)
    g = user_models.Generator(nz=16, ngf=8, nc=3)
    g.train()(torch.randn(4, 16, 1, 1))  # BatchNorm running statistics that are not the defaults
    path = tmp_path / "netG.pth"
    torch.save(g.state_dict(), path)
    return g.eval(), path


def test_examples_net_g_exports_with_a_2d_z(net_g, tmp_path, capsys):
    g, path = net_g
    out = tmp_path / "netG.onnx"
    assert main(["export", str(path), "--arch", "dcgan-examples", "-o", str(out), "--dtype", "fp16"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [list(i.shape)[1:] for i in session.get_inputs()] == [[16]]
    z = latents(3, 16)
    with torch.inference_mode():
        ref = g(torch.from_numpy(z)[:, :, None, None]).numpy()
    got = session.run(None, {"z": z})[0]
    assert got.shape == (3, 3, 64, 64) and np.abs(got - ref).max() < 0.02
    assert "PASS" in capsys.readouterr().out


def test_user_module_with_init_args(net_g, tmp_path):
    g, path = net_g
    source = foreign_source("user_models:Generator", path, '{"nz": 16, "ngf": 8, "nc": 3}')
    assert source.latent_dim == 16 and source.image_shape == (64, 64, 3) and source.kind == "foreign"
    result = export(source, tmp_path / "g.onnx", ExportOptions(precision="int8"))
    assert result.passed and result.metadata["latentforge.precision"] == "int8" and result.metadata["latentforge.kind"] == "foreign"
    assert result.metadata["latentforge.value_range"] == "[-1.0, 1.0]"


def test_linear_first_generator_from_safetensors(user_models, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    mlp = user_models.MLPGenerator()
    save_file(mlp.state_dict(), tmp_path / "mlp.safetensors")
    source = foreign_source("user_models:MLPGenerator", tmp_path / "mlp.safetensors", value_range=(0.0, 1.0))
    assert source.latent_dim == 12 and source.image_shape == (8, 8, 1)
    assert export(source, tmp_path / "mlp.onnx", ExportOptions(precision="bf16")).passed


def test_foreign_errors(user_models, net_g, tmp_path):
    g, path = net_g
    torch.save(user_models.ConvFirst().state_dict(), tmp_path / "conv.pth")
    with pytest.raises(InputError, match="--input-shape"):
        foreign_source("user_models:ConvFirst", tmp_path / "conv.pth")
    with pytest.raises(InputError, match="does not run"):
        foreign_source("user_models:ConvFirst", tmp_path / "conv.pth", input_shape=(5, 8, 8))
    torch.save(g, tmp_path / "whole.pth")  # a pickled module, not a state_dict
    with pytest.raises(CheckpointError, match="weights_only"):
        foreign_source("user_models:Generator", tmp_path / "whole.pth", '{"nz": 16, "ngf": 8}')
    with pytest.raises(CheckpointError, match="does not match"):
        foreign_source("user_models:Generator", path, '{"nz": 16, "ngf": 4}')
    with pytest.raises(InputError, match="pkg.mod:Class"):
        foreign_source("user_models.Generator", path)
    with pytest.raises(CheckpointError, match="not a pytorch/examples DCGAN"):
        dcgan_examples_source(tmp_path / "conv.pth")
    assert main(["export", "--module", "user_models:Generator", "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()
