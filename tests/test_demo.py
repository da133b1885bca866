"""The main job end to end on the shipped weights (the benchmark part is tested in test_bench.py)."""
import numpy as np
from PIL import Image

import latentforge
from latentforge.checkpoint import read_info
from latentforge.demo import EDIT_AMOUNTS, SHIPPED, run_demo
from latentforge.models import make_config


def test_shipped_weights_record_how_they_were_trained():
    info = read_info(SHIPPED)
    assert info.kind == "vae" and info.data == "faces"
    assert info.extra["command"].startswith("latentforge train vae --data faces")


def test_demo_writes_every_artifact_and_the_edit_opens_the_eyes(tmp_path):
    result = run_demo(out=tmp_path / "demo", bench=False)
    paths = result["paths"]
    for name in ("checkpoint", "onnx", "samples", "interpolation", "edit", "curves", "gan_samples", "vae_vs_gan",
                 "gan_curves"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0, name

    samples = np.asarray(Image.open(paths["samples"]))
    assert samples.shape[0] > 8 * 64 and samples.std() > 20  # 8 rows of 64 px tiles, not a flat image
    edit = Image.open(paths["edit"])
    assert edit.width > (1 + len(EDIT_AMOUNTS)) * 64

    # The ground-truth eye measure, read from the edited pixels, rises with the edit amount.
    readings = result["eyes_open_readings"]
    assert all(b >= a - 0.02 for a, b in zip(readings, readings[1:])), readings
    assert readings[-1] > readings[0] + 0.2, readings

    engine = latentforge.load(paths["onnx"])
    assert engine.backend == "onnxruntime" and set(engine.attributes) >= {"eyes_open", "smile"}
    np.testing.assert_array_equal(engine.attributes["eyes_open"],
                                  latentforge.load(paths["checkpoint"]).attributes["eyes_open"])


def test_demo_train_uses_the_shipped_recipe(tmp_path):
    result = run_demo(out=tmp_path / "demo", train=True, steps=4, bench=False)
    trained = read_info(tmp_path / "demo" / "run" / "checkpoint.safetensors")
    # As configs: a field added since the shipped file was written (learn_sigma) takes its default there.
    assert trained.step == 4 and make_config("vae", trained.config) == make_config("vae", read_info(SHIPPED).config)
    assert trained.extra["command"] == "latentforge demo --train --steps 4"
    assert result["paths"]["onnx"].is_file() and result["paths"]["curves"].is_file()
