"""The sharpness measures on cases with known answers: flat, blurred, identical and pure-detail images."""
import numpy as np
import pytest

from latentforge.errors import InputError
from latentforge.training.data import open_data
from latentforge.training.evaluate.sharpness import high_frequency_fraction, laplacian_energy, luminance, sharpness


def blur(images: np.ndarray) -> np.ndarray:
    """A 3x3 box blur (edges replicated), uint8 in and out."""
    x = np.pad(images.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = images.shape[1:3]
    out = sum(x[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
    return np.round(out).astype(np.uint8)


@pytest.fixture(scope="module")
def faces():
    return open_data("faces").get("test", np.arange(32))[0]


def test_flat_images_have_no_detail():
    flat = np.full((2, 16, 16, 3), 128, np.uint8)
    assert laplacian_energy(flat) == pytest.approx([0.0, 0.0], abs=1e-9)
    assert high_frequency_fraction(flat).tolist() == [0.0, 0.0]


def test_a_checkerboard_is_all_high_frequency():
    board = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)[None, :, :, None]
    assert high_frequency_fraction(board)[0] == pytest.approx(1.0)
    assert laplacian_energy(board)[0] == pytest.approx(16.0)    # |4 * (+-1)| at every interior pixel, squared


def test_a_slow_wave_has_almost_no_high_frequency():
    wave = np.round(127.5 + 127.5 * np.cos(2 * np.pi * np.arange(32) / 16)).astype(np.uint8)   # 1/4 of Nyquist
    image = np.ascontiguousarray(np.broadcast_to(wave[None, :], (32, 32)))[None, :, :, None]
    assert high_frequency_fraction(image)[0] < 1e-3


def test_real_faces_against_themselves_score_one(faces):
    scores = sharpness(faces, faces)
    assert scores["laplacian_ratio"] == 1.0 and scores["high_frequency_ratio"] == 1.0


def test_blurred_faces_are_less_sharp_and_more_blur_is_less_still(faces):
    once, twice = sharpness(blur(faces), faces), sharpness(blur(blur(faces)), faces)
    assert once["laplacian_ratio"] < 0.6 and once["high_frequency_ratio"] < 0.8
    assert twice["laplacian_ratio"] < once["laplacian_ratio"]
    assert twice["high_frequency_ratio"] < once["high_frequency_ratio"]


def test_bad_images_are_refused(faces):
    with pytest.raises(InputError, match="uint8 images"):
        luminance(faces.astype(np.float32))
    with pytest.raises(InputError, match="radius"):
        high_frequency_fraction(faces, radius=2.0)
    with pytest.raises(InputError, match="flat"):
        sharpness(faces, np.zeros_like(faces))
