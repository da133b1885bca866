"""Data sets: the faces renderer and its factors, and open_data for faces, digits and folders."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from latentforge.errors import DataError
from latentforge.training.data import open_data
from latentforge.training.data.faces import FACTORS, measure_eyes_open, render_faces, sample_factors


def _column(name: str) -> int:
    return FACTORS.index(name)


# ---- the renderer -------------------------------------------------------------------------------------------------

def test_factors_are_independent_draws_in_their_ranges():
    f = sample_factors(np.random.default_rng(0), 4000)
    assert f.dtype == np.float32 and f.shape == (4000, len(FACTORS))
    signed = {"smile", "shift_x", "shift_y"}
    for i, name in enumerate(FACTORS):
        lo = -1 if name in signed else 0
        assert lo <= f[:, i].min() < lo + 0.01 and 0.99 < f[:, i].max() <= 1, name
    assert set(np.unique(f[:, _column("glasses")])) == {0.0, 1.0}
    assert 0.45 < f[:, _column("glasses")].mean() < 0.55
    assert np.abs(np.corrcoef(f.T) - np.eye(len(FACTORS))).max() < 0.08


@pytest.mark.parametrize("size", [32, 64, 128])
def test_render_shape_dtype_and_determinism(size):
    f = sample_factors(np.random.default_rng(1), 5)
    images = render_faces(f, size)
    assert images.dtype == np.uint8 and images.shape == (5, size, size, 3)
    np.testing.assert_array_equal(images, render_faces(f, size))
    np.testing.assert_array_equal(images[2:3], render_faces(f[2:3], size))  # a face does not depend on its batch


def _middle_face() -> np.ndarray:
    f = np.full((1, len(FACTORS)), 0.5, dtype=np.float32)
    f[0, [_column("smile"), _column("shift_x"), _column("shift_y"), _column("glasses")]] = 0
    return f


@pytest.mark.parametrize("name", FACTORS)
def test_every_factor_visibly_changes_the_face(name):
    base = _middle_face()
    changed = base.copy()
    changed[0, _column(name)] = 1.0
    difference = np.abs(render_faces(base).astype(int) - render_faces(changed).astype(int)).max(axis=3)
    assert (difference > 40).sum() >= 20, f"{name} changed only {(difference > 40).sum()} pixels"


def test_eyes_open_and_closed_differ_around_the_eyes():
    closed, wide = _middle_face(), _middle_face()
    closed[0, _column("eyes_open")], wide[0, _column("eyes_open")] = 0, 1
    difference = np.abs(render_faces(closed).astype(int) - render_faces(wide).astype(int)).max(axis=3)[0]
    eye_band, rest = difference[24:38], np.concatenate([difference[:24], difference[38:]])
    assert (eye_band > 100).sum() > 60       # big white eyes against skin
    assert rest.max() == 0


def test_measure_eyes_open_is_monotone_in_eyes_open():
    f = np.repeat(sample_factors(np.random.default_rng(2), 30), 11, axis=0)
    f[:, _column("eyes_open")] = np.tile(np.linspace(0, 1, 11), 30)
    measured = measure_eyes_open(render_faces(f), f).reshape(30, 11)
    assert (np.diff(measured, axis=1) >= 0).all()
    assert (measured[:, 0] == 0).all()
    assert (measured[:, -1] > 0.8).all() and (measured[:, -1] < 1.2).all()
    assert (measured[:, -1] - measured[:, 5] > 0.5).all()


def test_measure_eyes_open_ranks_random_faces():
    f = sample_factors(np.random.default_rng(3), 300)
    measured = measure_eyes_open(render_faces(f), f)
    ranks = np.argsort(np.argsort(measured))
    assert np.corrcoef(ranks, np.argsort(np.argsort(f[:, _column("eyes_open")])))[0, 1] > 0.95


# ---- faces through open_data ---------------------------------------------------------------------------------------

def test_faces_are_a_pure_function_of_seed_split_and_index():
    data = open_data("faces")
    assert (data.name, data.image_size, data.channels) == ("faces", 64, 3)
    assert data.attribute_names == list(FACTORS)
    assert data.size("train") == 2**31 - 1 and data.size("test") == 2000
    images, attributes = data.get("train", np.array([5, 100, 7, 2**31 - 2]))
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
    assert attributes.shape == (4, len(FACTORS)) and attributes.dtype == np.float32
    again, again_attributes = data.get("train", np.array([7, 5]))
    np.testing.assert_array_equal(again, images[[2, 0]])
    np.testing.assert_array_equal(again_attributes, attributes[[2, 0]])
    np.testing.assert_array_equal(render_faces(attributes), images)
    np.testing.assert_array_equal(open_data("faces", seed=0).get("train", np.array([100]))[0], images[1:2])
    other_seed = open_data("faces", seed=1).get("train", np.array([5, 100, 7]))[0]
    assert all((other_seed[i] != images[i]).any() for i in range(3))


def test_faces_factor_streams_are_uniform_and_independent():
    factors = open_data("faces", image_size=32).get("train", np.arange(4000))[1]
    unit = (factors - factors.min(0)) / (factors.max(0) - factors.min(0))
    continuous = [i for i, name in enumerate(FACTORS) if name != "glasses"]
    assert np.abs(unit[:, continuous].mean(0) - 0.5).max() < 0.03
    assert np.abs(np.corrcoef(factors.T) - np.eye(len(FACTORS))).max() < 0.08


@pytest.mark.parametrize("size", [32, 128])
def test_faces_sizes(size):
    images, _ = open_data("faces", image_size=size).get("test", np.arange(3))
    assert images.shape == (3, size, size, 3)


def test_faces_test_split_is_held_out():
    data = open_data("faces", image_size=32)
    test_images, test_factors = data.get("test", np.arange(2000))
    train_images, train_factors = data.get("train", np.arange(2000))
    assert not set(map(bytes, test_images)) & set(map(bytes, train_images))
    assert not set(map(bytes, test_factors)) & set(map(bytes, train_factors))


# ---- digits --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return open_data("digits")


def test_digits(digits):
    assert (digits.name, digits.image_size, digits.channels, digits.attribute_names) == ("digits", 32, 1, ["label"])
    assert digits.size("train") == 1500 and digits.size("test") == 297
    images, labels = digits.get("test", np.arange(297))
    assert images.shape == (297, 32, 32, 1) and images.dtype == np.uint8 and images.max() > 200
    assert labels.shape == (297, 1) and set(np.unique(labels)) == set(range(10))
    large, _ = open_data("digits", image_size=64, seed=5).get("test", np.arange(297))
    assert large.shape == (297, 64, 64, 1)
    np.testing.assert_array_equal(open_data("digits", seed=5).get("test", np.arange(297))[1], labels)  # fixed split


# ---- folders -------------------------------------------------------------------------------------------------------

def _write(path, color, size=(12, 9)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _colored_folder(root, n):
    """n images in nested folders, image k filled with the colour (k, 2k, 3k), in sorted-name order."""
    names = []
    for k in range(n):
        name = f"{'ab'[k % 2]}/{'deep/' if k % 3 == 0 else ''}img{k:02d}.{['png', 'jpg', 'JPEG'][k % 3]}"
        _write(root / name, (10 * k, 5 * k, 200 - 10 * k))
        names.append(name)
    (root / "notes.txt").write_text("not an image")
    return sorted(names)


def test_folder_nested_split_and_centre_crop(tmp_path):
    names = _colored_folder(tmp_path, 12)
    data = open_data(str(tmp_path))
    assert (data.name, data.image_size, data.channels, data.attribute_names) == (str(tmp_path), 64, 3, [])
    assert data.size("train") == 11 and data.size("test") == 1
    test_images, test_attributes = data.get("test", np.array([0]))
    assert test_images.shape == (1, 64, 64, 3) and test_attributes.shape == (1, 0)
    k = int(names[9].split("img")[1][:2])                      # sorted index 9 is the test image
    np.testing.assert_allclose(test_images[0].reshape(-1, 3).mean(0), (10 * k, 5 * k, 200 - 10 * k), atol=3)

    wide = tmp_path / "wide"
    wide.mkdir()
    stripes = np.zeros((10, 30, 3), dtype=np.uint8)
    stripes[:, 10:20] = (255, 0, 0)                             # the centre square is red, the sides black
    Image.fromarray(stripes).save(wide / "stripes.png")
    crop, _ = open_data(str(wide), image_size=32).get("train", np.array([0]))
    assert (crop[0, :, :, 0] > 250).all() and crop[0, :, :, 1:].max() < 5


@pytest.mark.parametrize("n, train, test", [(1, 1, 1), (3, 2, 1), (10, 9, 1), (25, 23, 2)])
def test_folder_split_sizes(tmp_path, n, train, test):
    for k in range(n):
        _write(tmp_path / f"{k:02d}.png", (k, k, k))
    data = open_data(str(tmp_path), image_size=32)
    assert (data.size("train"), data.size("test")) == (train, test)


def test_folder_with_labels_csv(tmp_path):
    names = _colored_folder(tmp_path, 12)
    labelled = names[::2]                                        # the CSV names half the images, unsorted
    rows = [f"{name},{int(name.split('img')[1][:2])},-1" for name in reversed(labelled)]
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,index,smiling\n" + "\n".join(rows) + "\n")
    data = open_data(str(tmp_path), image_size=32, labels=str(csv))
    assert data.attribute_names == ["index", "smiling"]
    assert data.size("train") + data.size("test") == 6
    images, attributes = data.get("train", np.arange(data.size("train")))
    for image, (k, smiling) in zip(images, attributes):
        assert smiling == -1
        np.testing.assert_allclose(image.reshape(-1, 3).mean(0), (10 * k, 5 * k, 200 - 10 * k), atol=3)


# ---- bad input -----------------------------------------------------------------------------------------------------

def _raises(match, fn, *args, **kwargs):
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_unknown_spec_and_bad_options(tmp_path):
    _raises("unknown data set 'nowhere': use faces, digits, stacked-digits, ring, grid or a folder", open_data, "nowhere")
    _raises("image_size 48", open_data, "faces", image_size=48)
    _raises("labels.csv", open_data, "faces", labels="labels.csv")
    _raises("labels.csv", open_data, "digits", labels="labels.csv")


def test_empty_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.txt").write_text("no images here")
    _raises(f"no png/jpg images found in {tmp_path}", open_data, str(tmp_path))


def test_corrupt_and_truncated_images(tmp_path):
    _write(tmp_path / "good.png", (1, 2, 3))
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    _raises("broken.png", open_data, str(tmp_path))
    (tmp_path / "broken.png").unlink()
    _write(tmp_path / "photo.jpg", (9, 9, 9), size=(200, 200))
    whole = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "photo.jpg").write_bytes(whole[: len(whole) // 2])
    _raises("photo.jpg", open_data, str(tmp_path))


def test_bad_labels_csv(tmp_path):
    first = _colored_folder(tmp_path, 3)[0]
    csv = tmp_path / "labels.csv"
    csv.write_text(f"filename,smiling\n{first},1\nb/gone.png,1\nb/lost.png,-1\n")
    _raises("names 2 image.* missing .* first 'b/gone.png'", open_data, str(tmp_path), labels=str(csv))
    csv.write_text(f"file,smiling\n{first},1\n")
    _raises("labels.csv has no 'filename' column", open_data, str(tmp_path), labels=str(csv))
    csv.write_text(f"filename,smiling\n{first},1\nb/img01.jpg,yes\n")
    _raises(r"labels.csv, line 3 \('b/img01.jpg'\): column 'smiling' has 'yes'", open_data, str(tmp_path),
            labels=str(csv))
    _raises("no_such.csv", open_data, str(tmp_path), labels=str(tmp_path / "no_such.csv"))


def test_bad_split_and_indices(digits):
    _raises("unknown split 'val'", digits.size, "val")
    _raises("unknown split 'valid'", digits.get, "valid", np.arange(2))
    _raises("index 297 is out of range for 'digits' test: use 0 .. 296", digits.get, "test", np.array([0, 297]))
    _raises("index -1", digits.get, "train", np.array([-1]))
    _raises("1-D integer array", digits.get, "train", np.array([0.5]))
    _raises("index 2000", open_data("faces").get, "test", np.array([2000]))
    images, labels = digits.get("train", np.array([], dtype=np.int64))
    assert images.shape == (0, 32, 32, 1) and labels.shape == (0, 1)


def test_data_does_not_import_torch():
    code = "import sys, latentforge.training.data; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
