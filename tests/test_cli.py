"""The CLI on bad input: one line on stderr, exit 2, nothing changed on disk."""
import os
import pickle

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from latentforge.checkpoint import save_checkpoint
from latentforge.cli import main
from latentforge.models import ConvVAE, VAEConfig


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    ckpt = d / "vae.safetensors"
    save_checkpoint(ckpt, ConvVAE(VAEConfig(image_size=32, latent_dim=4, base_channels=4)).eval(), data="faces", step=1)
    truncated = d / "truncated.safetensors"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    garbage = d / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    pickled = d / "netG.pth"
    torch.save({"main.0.weight": torch.zeros(2)}, pickled)
    raw_pickle = d / "model.pkl"
    raw_pickle.write_bytes(pickle.dumps({"a": 1}))
    foreign = d / "foreign.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["z"], ["image"])], "g",
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), foreign)
    return {"ckpt": ckpt, "truncated": truncated, "garbage": garbage, "pickled": pickled,
            "raw_pickle": raw_pickle, "foreign": foreign, "dir": d}


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("model,needle", [
    ("missing.safetensors", "does not exist"),
    ("truncated", "truncated"),
    ("garbage", "safetensors"),
    ("pickled", "pickle"),
    ("raw_pickle", "pickle"),
    ("foreign", "latentforge"),
])
def test_bad_model_files(files, tmp_path, capsys, model, needle):
    path = files.get(model, files["dir"] / model)
    before = snapshot(files["dir"])
    for argv in (["sample", path, "-n", 4, "-o", tmp_path / "s.png"],
                 ["export", path, "-o", tmp_path / "m.onnx"]):
        if argv[0] == "export" and str(path).endswith(".onnx"):
            continue
        code, err = run_cli(argv, capsys)
        assert code == 2, err
        assert err.startswith("latentforge: error:") and "\n" not in err and needle in err, err
    assert snapshot(files["dir"]) == before
    assert list(tmp_path.iterdir()) == []


def test_n_must_be_positive(files, tmp_path, capsys):
    for n in (0, -3):
        code, err = run_cli(["sample", files["ckpt"], "-n", n, "-o", tmp_path / "s.png"], capsys)
        assert code == 2 and "n must be a positive integer" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_output_folder_must_exist(files, tmp_path, capsys):
    for argv in (["sample", files["ckpt"], "-n", 2, "-o", tmp_path / "nope" / "s.png"],
                 ["interpolate", files["ckpt"], "-o", tmp_path / "nope" / "strip.png"],
                 ["export", files["ckpt"], "-o", tmp_path / "nope" / "m.onnx"],
                 ["bench", files["ckpt"], "--json", tmp_path / "nope" / "b.json"]):
        code, err = run_cli(argv, capsys)
        assert code == 2 and "does not exist" in err and "\n" not in err, (argv, err)
    assert list(tmp_path.iterdir()) == []


def test_sample_and_interpolate_write_what_they_say(files, tmp_path, capsys):
    assert main(["sample", str(files["ckpt"]), "-n", "5", "--seed", "3", "-o", str(tmp_path / "s.npy")]) == 0
    images = np.load(tmp_path / "s.npy")
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert main(["sample", str(files["ckpt"]), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    assert main(["interpolate", str(files["ckpt"]), "--steps", "6", "--seed", "1",
                 "-o", str(tmp_path / "walk.png")]) == 0
    from PIL import Image

    strip = Image.open(tmp_path / "walk.png")
    assert strip.width > 5 * strip.height  # one row of 6 tiles
    assert sorted(os.listdir(tmp_path)) == ["s.npy", "s.png", "walk.png"]


def test_export_cli_writes_report(files, tmp_path, capsys):
    import json

    assert main(["export", str(files["ckpt"]), "-o", str(tmp_path / "m.onnx"),
                 "--report", str(tmp_path / "parity.json")]) == 0
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["passed"] and [o["name"] for o in report["outputs"]] == [
        "image[batch=1]", "image[batch=16]", "image[golden]"]   # the golden check the file carries, checked too
    assert "latentforge.golden" not in report["metadata"] and "PASS" in capsys.readouterr().out


def test_a_checkpoint_whose_header_length_starts_with_the_pickle_byte_loads(tmp_path):
    from latentforge.checkpoint import read_info

    model = ConvVAE(VAEConfig(image_size=32, latent_dim=4, base_channels=4))
    path = tmp_path / "c.safetensors"
    for pad in range(0, 512, 8):  # safetensors pads headers to 8 bytes: some length has low byte 0x80
        save_checkpoint(path, model, data="faces", step=1, extra={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert read_info(path).kind == "vae"


def test_more_bad_inputs_get_one_line_and_leave_nothing(files, tmp_path, capsys):
    cases = [
        (["sample", files["ckpt"], "-n", 2, "--seed", -1, "-o", tmp_path / "s.png"], "seed"),
        (["interpolate", files["ckpt"], "-o", tmp_path / "walk.npy"], ".png"),
        (["export", files["ckpt"], "-o", tmp_path / "m.txt"], ".onnx"),
        (["export", files["ckpt"], "-o", tmp_path / "m.onnx", "--atol", "nan"], "tolerances"),
        (["train", "vae", "--data", tmp_path / "no_such_folder", "--out", tmp_path / "run"], "no_such_folder"),
        (["train", "vae", "--out", tmp_path / "run", "--model-options", "{bad"], "JSON"),
    ]
    for argv, needle in cases:
        code, err = run_cli(argv, capsys)
        assert code == 2 and needle in err and "\n" not in err, (argv, err)
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_kind_is_a_checkpoint_error(tmp_path):
    from latentforge.errors import CheckpointError
    from latentforge.models import build_model

    with pytest.raises(CheckpointError, match="unknown model kind 'wgan'"):
        build_model("wgan", {})


def test_chunked_decode_equals_one_batch(files):
    import latentforge
    from latentforge.images import to_uint8

    model = latentforge.load(files["ckpt"])
    z = latentforge.latents(7, model.latent_dim)
    np.testing.assert_array_equal(model.decode(z, chunk=3), to_uint8(model.decode_float(z), model.value_range))


def test_onnx_source_names_the_graph_a_model_runs(files):
    import latentforge

    assert latentforge.load(files["ckpt"]).onnx_source is None
    assert isinstance(latentforge.load(files["ckpt"], backend="onnxruntime").onnx_source, bytes)
