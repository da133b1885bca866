import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

import latentforge
from latentforge.checkpoint import load_checkpoint
from latentforge.errors import BackendUnavailable, CheckpointError, InputError
from latentforge.latents import latents
from latentforge.runtime import load


@pytest.fixture(scope="module", params=["vae", "dcgan"])
def artifacts(request):
    """(checkpoint, exported .onnx) of one tiny model kind."""
    return (request.getfixturevalue(f"{request.param}_checkpoint"), request.getfixturevalue(f"{request.param}_onnx"))


@pytest.fixture(scope="module")
def three_ways(artifacts):
    """The same weights on every backend: checkpoint on torch, checkpoint on onnxruntime, exported .onnx."""
    checkpoint, exported = artifacts
    return [load(checkpoint, "torch"), load(checkpoint, "onnxruntime"), load(exported)]


def test_every_backend_describes_the_same_model(three_ways, artifacts):
    _, info = load_checkpoint(artifacts[0])
    size, channels = info.config["image_size"], info.config["channels"]
    for model in three_ways:
        assert model.kind == info.kind and model.latent_dim == info.config["latent_dim"]
        assert model.image_shape == (size, size, channels) and model.value_range == info.value_range
        assert model.threads >= 1 and f"backend={model.backend!r}" in repr(model)
    assert [m.backend for m in three_ways] == ["torch", "onnxruntime", "onnxruntime"]
    if info.kind == "vae":
        for model in three_ways:
            assert list(model.attributes) == ["smile"] and model.attributes["smile"].dtype == np.float32
            np.testing.assert_array_equal(model.attributes["smile"], np.full(8, 0.5, np.float32))
    else:
        assert all(m.attributes == {} for m in three_ways)


def test_same_seed_gives_the_same_images_on_every_backend(three_ways):
    images = [m.sample(4, seed=7) for m in three_ways]
    h, w, c = three_ways[0].image_shape
    for got in images:
        assert got.dtype == np.uint8 and got.shape == (4, h, w, c)
        assert np.abs(got.astype(int) - images[0].astype(int)).max() <= 1
    assert not np.array_equal(three_ways[0].sample(4, seed=8), images[0])


@pytest.mark.parametrize("n", [1, 5])
def test_decode_float_matches_the_reference_module_on_fresh_latents(three_ways, artifacts, n):
    reference, _ = load_checkpoint(artifacts[0])
    z = latents(n, three_ways[0].latent_dim)  # fresh entropy every run
    with torch.inference_mode():
        expected = reference.decode(torch.from_numpy(z)).numpy()
    for model in three_ways:
        got = model.decode_float(z)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=model.backend)


def test_decode_casts_float64_and_integer_latents(three_ways):
    model = three_ways[0]
    z64 = latents(3, model.latent_dim, seed=1).astype(np.float64)
    np.testing.assert_array_equal(model.decode(z64), model.decode(z64.astype(np.float32)))
    assert model.decode(np.zeros((2, model.latent_dim), dtype=np.int64)).shape[0] == 2
    frozen = latents(2, model.latent_dim, seed=1)
    frozen.flags.writeable = False
    np.testing.assert_array_equal(model.decode(frozen), model.decode(frozen.copy()))


def test_decode_uses_the_value_range_edges(three_ways):
    model = three_ways[1]
    z = latents(2, model.latent_dim, seed=3)
    lo, hi = model.value_range
    expected = np.clip(np.rint((model.decode_float(z) - lo) * 255 / (hi - lo)), 0, 255).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(model.decode(z), expected.astype(np.uint8))


def test_temperature_zero_gives_the_mean_image(three_ways):
    images = three_ways[2].sample(3, seed=5, temperature=0.0)
    assert (images == images[0]).all()


def test_encode_matches_the_reference_encoder(vae_checkpoint):
    reference, _ = load_checkpoint(vae_checkpoint)
    images = np.random.default_rng().integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(images.astype(np.float32).transpose(0, 3, 1, 2) / 255)
    with torch.inference_mode():
        mu_ref, logvar_ref = (t.numpy() for t in reference.encode(x))
    for backend in ("torch", "onnxruntime"):
        mu, logvar = load(vae_checkpoint, backend).encode(images)
        assert mu.dtype == logvar.dtype == np.float32 and mu.shape == logvar.shape == (3, 8)
        np.testing.assert_allclose(mu, mu_ref, atol=1e-5)
        np.testing.assert_allclose(logvar, logvar_ref, atol=1e-5)


def test_threads_are_honoured_and_do_not_leak(vae_checkpoint, vae_onnx):
    exported = load(vae_onnx, threads=1)
    assert exported.threads == 1
    assert exported._decoder.graph.session.get_session_options().intra_op_num_threads == 1
    before = torch.get_num_threads()
    model = load(vae_checkpoint, "torch", threads=1)
    model.sample(2, seed=0)
    assert model.threads == 1 and torch.get_num_threads() == before


def test_load_from_the_package_root(vae_onnx):
    model = latentforge.load(vae_onnx)
    assert isinstance(model, latentforge.runtime.Model) and model.backend == "onnxruntime"


def test_running_an_onnx_never_imports_torch(vae_onnx):
    script = ("import sys, latentforge\n"
              f"m = latentforge.load({str(vae_onnx)!r})\n"
              "assert m.sample(2, seed=7).shape == (2, 32, 32, 3)\n"
              "assert m.decode_float(latentforge.latents(1, m.latent_dim)).shape == (1, 3, 32, 32)\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# Bad inputs: each is one line that names the value and what to do.

def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as err:
        load(tmp_path / "nope.onnx")
    assert "nope.onnx" in one_line(err)
    with pytest.raises(CheckpointError, match="is a folder"):
        load(tmp_path)


def test_onnx_that_latentforge_did_not_export(tmp_path):
    z = onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, ["N", 8])
    image = onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["N", 8])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["z"], ["image"])], "foreign", [z], [image])
    path = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(CheckpointError, match="did not export .*latentforge export") as err:
        load(path)
    one_line(err)


def test_corrupt_and_truncated_onnx(vae_onnx, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(vae_onnx.read_bytes()[: vae_onnx.stat().st_size // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff not a protobuf" * 10)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match="not a readable ONNX model") as err:
            load(path)
        assert "latentforge export" in one_line(err)


def test_pickle_given_as_checkpoint(tmp_path):
    path = tmp_path / "netG.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load(path)


def test_backend_choices(vae_onnx, vae_checkpoint):
    with pytest.raises(InputError, match="'auto', 'onnxruntime', 'openvino', 'tensorrt', 'torch'.*'tensorflow'"):
        load(vae_checkpoint, backend="tensorflow")
    with pytest.raises(BackendUnavailable, match="runs on onnxruntime or openvino; load the checkpoint"):
        load(vae_onnx, backend="torch")
    for threads in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="threads"):
            load(vae_onnx, threads=threads)


def test_missing_onnxruntime_says_how_to_install(vae_onnx, vae_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    monkeypatch.setitem(sys.modules, "openvino", None)  # else auto runs the .onnx on OpenVINO
    for path, backend in ((vae_onnx, "auto"), (vae_checkpoint, "onnxruntime")):
        with pytest.raises(BackendUnavailable, match=r"pip install \"latentforge\[cpu\]\""):
            load(path, backend)


@pytest.mark.parametrize("z, match", [
    (np.zeros((2, 7), np.float32), r"shape \[N, 8\] with N >= 1, got \[2, 7\]"),
    (np.zeros(8, np.float32), r"shape \[N, 8\] with N >= 1, got \[8\]"),
    (np.zeros((1, 2, 8), np.float32), r"got \[1, 2, 8\]"),
    (np.zeros((0, 8), np.float32), r"got \[0, 8\]"),
    (np.array([[0.0] * 7 + [np.nan]]), r"finite numbers of shape \[N, 8\]; z\[0, 7\] is nan"),
    (np.array([[0.0] * 8, [np.inf] + [0.0] * 7]), r"z\[1, 0\] is inf"),
    (np.full((1, 8), 1e300), r"z\[0, 0\] is inf"),
    (np.array([[np.inf, -np.inf] + [0.0] * 6]), r"z\[0, 0\] is inf"),  # cancels to NaN in a sum; still caught
    (np.where(np.arange(320).reshape(40, 8) == 314, np.nan, 0.0), r"z\[39, 2\] is nan"),  # a large batch
    (np.array([["a"] * 8]), r"real numbers of shape \[N, 8\]"),
])
def test_bad_latents(vae_onnx, z, match):
    with pytest.raises(InputError, match=match) as err:
        load(vae_onnx).decode(z)
    one_line(err)


def test_bad_sample_arguments(vae_onnx):
    model = load(vae_onnx)
    for n in (0, -3):
        with pytest.raises(InputError, match="n must be a positive integer"):
            model.sample(n)
    with pytest.raises(InputError, match="temperature must be a finite number >= 0"):
        model.sample(2, temperature=-0.5)


def test_encode_refusals(vae_checkpoint, vae_onnx, dcgan_checkpoint):
    with pytest.raises(InputError, match="this is a dcgan model .* load a VAE checkpoint"):
        load(dcgan_checkpoint).encode(np.zeros((1, 32, 32, 1), np.uint8))
    with pytest.raises(InputError, match="does not contain; load the model's checkpoint"):
        load(vae_onnx).encode(np.zeros((1, 32, 32, 3), np.uint8))
    model = load(vae_checkpoint)
    for images in (np.zeros((1, 32, 32, 3), np.float32), np.zeros((1, 3, 32, 32), np.uint8),
                   np.zeros((32, 32, 3), np.uint8), np.zeros((0, 32, 32, 3), np.uint8)):
        with pytest.raises(InputError, match=r"images must be uint8 \[N, 32, 32, 3\]") as err:
            model.encode(images)
        one_line(err)



# What every graph, decoder and model offers (runtime/protocols.py), checked member by member without calling
# anything: a VQ model's latent_dim raises on purpose, which isinstance on Python 3.11 would trip over.

def protocol_members(protocol) -> set[str]:
    return set(protocol.__annotations__) | {name for name in vars(protocol) if not name.startswith("_")} | (
        {"__call__"} if "__call__" in vars(protocol) else set())


def missing_members(obj, protocol) -> list[str]:
    import inspect

    absent = object()
    return sorted(m for m in protocol_members(protocol) if inspect.getattr_static(obj, m, absent) is absent
                  and not (isinstance(obj, type) and m in _assigned_in_init(obj)))


def _assigned_in_init(cls) -> set[str]:
    """Instance attributes a class sets in __init__ (for a class this machine cannot instantiate: TensorRT)."""
    import inspect
    import re

    return set(re.findall(r"self\.(\w+)\s*=", inspect.getsource(cls.__init__)))


def test_every_backend_graph_satisfies_the_protocol(vae_onnx, vae_checkpoint, vae_filter_onnx):
    from latentforge.runtime.ort_backend import OrtGraph
    from latentforge.runtime.openvino_backend import OvGraph
    from latentforge.runtime.protocols import BackendGraph, Decoder
    from latentforge.runtime.trt_backend import TrtGraph

    for graph in (OrtGraph(vae_onnx), OvGraph(vae_onnx), load(vae_filter_onnx).filter_graph()):
        assert isinstance(graph, BackendGraph) and not missing_members(graph, BackendGraph), type(graph)
    assert not missing_members(TrtGraph, BackendGraph)  # an instance needs a GPU: tests/test_backends.py
    models = (load(vae_onnx), load(vae_onnx, "openvino"), load(vae_checkpoint), load(vae_checkpoint, "onnxruntime"))
    for model in models:
        assert isinstance(model._decoder, Decoder) and not missing_members(model._decoder, Decoder)


def test_every_model_satisfies_the_protocol(vae_onnx, vae_checkpoint, dcgan_checkpoint, vae_filter_onnx, tmp_path):
    from latentforge.runtime.protocols import LoadedModel
    from latentforge.runtime.vq_model import VQModel

    facts = {"image_shape": (8, 8, 3), "value_range": (0.0, 1.0), "codebook_size": 16, "code_grid": 2}
    vq = VQModel(tmp_path / "vq.safetensors", "vqvae", "torch", facts, decode=lambda codes: codes)
    models = [load(vae_onnx), load(vae_checkpoint), load(dcgan_checkpoint, "onnxruntime"), load(vae_filter_onnx), vq]
    for model in models:
        assert not missing_members(model, LoadedModel), model
    assert [(m.point_dim, m.codebook_size) for m in models] == [(0, 0)] * 4 + [(0, 16)]


def test_directions_have_one_loader(vae_checkpoint, tmp_path):
    """Attribute files (edit, Filter) and a model file's embedded directions are read and checked in one place."""
    from safetensors.numpy import save_file

    from latentforge.directions import load_directions, parse_attributes, save_directions

    direction = np.arange(8, dtype=np.float64)
    save_file({"beard": direction.astype(np.float32)}, tmp_path / "plain.safetensors")
    save_directions(tmp_path / "made.safetensors", {"beard": direction}, checkpoint="c", data="d", method="m")
    for source in (tmp_path / "plain.safetensors", str(tmp_path / "made.safetensors"), {"beard": direction}):
        got = load_directions(source, latent_dim=8)
        assert got["beard"].dtype == np.float32 and np.array_equal(got["beard"], direction)
    with pytest.raises(InputError, match=r"'beard' has shape \[8\], but this model's latents are \[4\]"):
        load_directions(tmp_path / "plain.safetensors", latent_dim=4)
    with pytest.raises(InputError, match=r"'beard' has shape \[2, 4\], but a direction is a vector"):
        load_directions({"beard": np.zeros((2, 4))})
    with pytest.raises(CheckpointError, match="not an attributes file"):
        load_directions(vae_checkpoint)
    (tmp_path / "pickled.safetensors").write_bytes(b"\x80\x04junk")
    with pytest.raises(InputError, match="not a readable .safetensors file .*never unpickles"):
        load_directions(tmp_path / "pickled.safetensors")
    with pytest.raises(InputError, match="is a folder"):
        load_directions(tmp_path)
    assert list(parse_attributes('{"smile": [0.5, 0.5]}', 2, tmp_path / "m.onnx")) == ["smile"]
    for text, match in (("[1, 2]", "malformed latentforge.attributes"), ('{"smile": [1]}', r"shape \[1\].*re-save"),
                        ('{"smile": ["x", 1]}', "not a vector of numbers")):
        with pytest.raises(CheckpointError, match=match):
            parse_attributes(text, 2, tmp_path / "m.onnx")
