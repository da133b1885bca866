"""The run-time NaN guard: a reduced-precision graph that overflows for some latents is recomputed at a higher
precision for those rows, counted, and correct; what overflows at fp32 too is a NumericalError, not black."""
import numpy as np
import pytest

import latentforge
from latentforge.errors import NumericalError
from latentforge.export.pipeline import export_precisions
from latentforge.latents import latents


@pytest.fixture(scope="module")
def fp16_and_fp32(vae_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("guard")
    export_precisions(vae_checkpoint, {"fp32": folder / "vae.onnx", "fp16": folder / "vae.fp16.onnx"})
    return (latentforge.load(folder / "vae.onnx", backend="onnxruntime", precision="fp16"),
            latentforge.load(folder / "vae.onnx", backend="onnxruntime"))


def _overflowing(n: int, rows: list[int]) -> np.ndarray:
    """Fresh N(0, I) latents, with `rows` set to 7e4: past fp16's 65504, so the fp16 graph gives Inf/NaN there,
    while fp32 stays finite (the sigmoid head saturates)."""
    z = latents(n, 8, seed=int(np.random.default_rng().integers(2**31)))
    z[rows] = 7e4
    return z


def test_fp16_overflow_is_recomputed_at_fp32_and_counted(fp16_and_fp32):
    fp16, fp32 = fp16_and_fp32
    z = _overflowing(5, [1, 3])
    raw = fp16._decoder(z)   # the fp16 graph itself, unguarded: the overflow is real
    assert not np.isfinite(raw[[1, 3]]).all() and np.isfinite(raw[[0, 2, 4]]).all()
    before = fp16.nonfinite_recomputed
    out = fp16.decode_float(z)
    assert np.isfinite(out).all() and fp16.nonfinite_recomputed == before + 1
    np.testing.assert_allclose(out[[1, 3]], fp32.decode_float(z)[[1, 3]], atol=1e-5)
    np.testing.assert_array_equal(out[[0, 2, 4]], raw[[0, 2, 4]])   # finite rows keep the fp16 result
    images = fp16.decode(z)
    np.testing.assert_array_equal(images[[1, 3]], fp32.decode(z)[[1, 3]])
    assert fp16.nonfinite_recomputed == before + 2


def test_finite_output_is_not_counted(fp16_and_fp32):
    fp16, _ = fp16_and_fp32
    before = fp16.nonfinite_recomputed
    fp16.sample(4, seed=3)
    assert fp16.nonfinite_recomputed == before


@pytest.mark.parametrize("which, tried", [(0, "at fp16 and fp32 "), (1, "at fp32 ")])
def test_overflow_at_fp32_too_is_an_error_not_a_black_image(fp16_and_fp32, which, tried):
    model = fp16_and_fp32[which]
    z = latents(2, 8, seed=0)
    z[1] = 3e38   # finite in float32, but the first layer's sum overflows at any precision
    with pytest.raises(NumericalError) as error:
        model.decode(z)
    assert f"z[1] gave NaN/Inf {tried}(1 of 2 latents)" in str(error.value)
