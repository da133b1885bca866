"""`latentforge attributes` and `latentforge edit`, end to end on faces and on a labelled image folder."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import latentforge
from latentforge.cli import main
from latentforge.directions import load_directions, parse_amount
from latentforge.errors import CheckpointError, InputError


@pytest.fixture
def folder(tmp_path):
    """12 images, bright ones labelled +1 and dark ones -1 in a CelebA-style CSV."""
    root = tmp_path / "imgs"
    root.mkdir()
    rows = ["filename,bright"]
    rng = np.random.default_rng(0)
    for i in range(12):
        level = 200 if i % 2 else 40
        pixels = np.clip(level + rng.integers(-20, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"im{i:02d}.png")
        rows.append(f"im{i:02d}.png,{1 if i % 2 else -1}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return root, tmp_path / "labels.csv"


def test_independent_attributes_are_orthogonal_to_each_other(tmp_path, capsys):
    shipped = Path(latentforge.__file__).parent / "weights" / "faces_vae.safetensors"
    plain, alone = tmp_path / "plain.safetensors", tmp_path / "alone.safetensors"
    assert main(["attributes", str(shipped), "--data", "faces", "-n", "300", "-o", str(plain)]) == 0
    assert main(["attributes", str(shipped), "--data", "faces", "-n", "300", "--independent", "-o", str(alone)]) == 0
    before, after = load_directions(plain, latent_dim=16), load_directions(alone, latent_dim=16)
    assert list(before) == list(after) and len(after) == 9
    eyes = after["eyes_open"]
    assert all(abs(float(eyes @ before[k])) < 1e-3 * np.linalg.norm(eyes) * np.linalg.norm(before[k])
               for k in before if k != "eyes_open")
    assert float(eyes @ before["eyes_open"]) == pytest.approx(float(before["eyes_open"] @ before["eyes_open"]), rel=1e-3)


def test_attributes_and_edit_on_a_labelled_folder(vae_checkpoint, folder, tmp_path, capsys):
    root, labels = folder
    attrs = tmp_path / "attrs.safetensors"
    assert main(["attributes", str(vae_checkpoint), "--data", str(root), "--labels", str(labels),
                 "-o", str(attrs)]) == 0
    directions = load_directions(attrs, latent_dim=8)
    assert list(directions) == ["bright"] and directions["bright"].shape == (8,)
    out = tmp_path / "edited"
    assert main(["edit", str(vae_checkpoint), "--input", str(root), "--attr", "bright=+1.5",
                 "--attributes", str(attrs), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"im{i:02d}.png" for i in range(12)]
    # The CLI's output is exactly Model.edit of the same (cropped, resized) images.
    model = latentforge.load(vae_checkpoint)
    from latentforge.cli.edit import _read

    src = np.stack([_read(str(root / "im03.png"), model.image_shape)])
    expected = model.edit(src, {"bright": 1.5}, directions)[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "im03.png")), expected)
    # Amount 0 is a plain reconstruction; a different amount changes the image.
    plain = model.edit(src, {"bright": 0.0}, directions)
    assert not np.array_equal(plain, model.edit(src, {"bright": 2.0}, directions))
    capsys.readouterr()
    assert main(["attributes", str(vae_checkpoint), "--data", str(root), "--labels", str(labels), "--from-samples",
                 "-o", str(tmp_path / "s.safetensors")]) == 2   # a VAE has no generator samples to fit on
    assert "--from-samples" in capsys.readouterr().err and not (tmp_path / "s.safetensors").exists()


def test_edit_one_face_with_directions_learned_from_the_faces_labels(tmp_path, capsys):
    from latentforge.images import save_png
    from latentforge.training.data import open_data

    shipped = latentforge.load(latentforge.__file__.replace("__init__.py", "weights/faces_vae.safetensors"))
    image = open_data("faces").get("test", np.arange(1))[0]
    save_png(image[0], tmp_path / "face.png")
    assert main(["attributes", str(shipped.path), "--data", "faces", "-n", "300",
                 "-o", str(tmp_path / "a.safetensors")]) == 0
    assert "eyes_open" in capsys.readouterr().out
    for extra in ([], ["--attributes", str(tmp_path / "a.safetensors")]):
        assert main(["edit", str(shipped.path), "--input", str(tmp_path / "face.png"), "--attr", "eyes_open=+1.5",
                     "--attr", "smile=-1", "-o", str(tmp_path / "out.png"), *extra]) == 0
        assert np.asarray(Image.open(tmp_path / "out.png")).shape == (64, 64, 3)


def test_bad_edit_inputs_get_one_line_errors(vae_checkpoint, dcgan_checkpoint, folder, tmp_path, capsys):
    root, _ = folder
    cases = [
        (["edit", str(vae_checkpoint), "--input", str(root / "im00.png"), "--attr", "eyes", "-o", "o.png"],
         "ATTR=AMOUNT"),
        (["edit", str(vae_checkpoint), "--input", str(tmp_path / "nope.png"), "--attr", "a=1", "-o", "o.png"],
         "does not exist"),
        (["edit", str(vae_checkpoint), "--input", str(root / "im00.png"), "--attr", "eyes_open=1",
          "-o", str(tmp_path / "o.png")], "no direction for attribute"),
        (["attributes", str(dcgan_checkpoint), "--data", "faces", "-o", str(tmp_path / "a.safetensors")],
         "dcgan checkpoint"),
        (["attributes", str(vae_checkpoint), "--data", str(root), "-o", str(tmp_path / "a.safetensors")],
         "no attribute labels"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "a.safetensors").exists()
    with pytest.raises(CheckpointError, match="not an attributes file"):
        load_directions(vae_checkpoint)
    assert parse_amount("smile=-1") == ("smile", -1.0)
    with pytest.raises(InputError):
        parse_amount("smile=nan")


def test_independent_directions_leave_the_others_alone_and_keep_their_own_reach():
    from latentforge.training.attributes import independent

    rng = np.random.default_rng(0)
    base = {name: rng.normal(size=12).astype(np.float32) for name in ("eyes", "glasses", "smile")}
    base["eyes"] = base["eyes"] + 2.0 * base["glasses"]     # eyes drags glasses along
    out = independent(base)
    for name, d in out.items():
        for other, o in base.items():
            if other != name:   # orthogonal to every other factor's direction
                assert abs(float(d @ o)) < 1e-4 * float(np.linalg.norm(d) * np.linalg.norm(o))
        assert float(d @ base[name]) == pytest.approx(float(base[name] @ base[name]), rel=1e-4)   # same reach
    assert independent({"eyes": base["eyes"]})["eyes"] is base["eyes"]
    with pytest.raises(InputError, match="span of the other"):
        independent({"a": base["smile"], "b": base["glasses"], "c": base["smile"] - base["glasses"]})
