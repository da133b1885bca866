import numpy as np
import pytest

from latentforge import InputError, interpolate, latents


def test_latents_are_seeded_pcg64_float32():
    a = latents(4, 8, seed=7)
    assert a.dtype == np.float32 and a.shape == (4, 8)
    np.testing.assert_array_equal(a, latents(4, 8, seed=7))
    np.testing.assert_array_equal(a, np.random.Generator(np.random.PCG64(7)).standard_normal((4, 8), dtype=np.float32))
    assert not np.array_equal(a, latents(4, 8, seed=8))
    assert not np.array_equal(latents(4, 8), latents(4, 8))
    np.testing.assert_allclose(latents(4, 8, seed=7, temperature=0.5), a * 0.5)


@pytest.mark.parametrize("args", [(0, 4), (-1, 4), (2, 0), (2.5, 4)])
def test_latents_bad_sizes(args):
    with pytest.raises(InputError):
        latents(*args)


def test_slerp_keeps_norm_and_hits_endpoints():
    z0, z1 = latents(2, 64, seed=1)
    path = interpolate(z0, z1, 9)
    np.testing.assert_allclose(path[0], z0, atol=1e-5)
    np.testing.assert_allclose(path[-1], z1, atol=1e-5)
    norms = np.linalg.norm(path, axis=1)
    lerp_norms = np.linalg.norm(interpolate(z0, z1, 9, "lerp"), axis=1)
    assert norms.min() > 0.9 * min(np.linalg.norm(z0), np.linalg.norm(z1))
    assert lerp_norms[4] < norms[4]


def test_interpolate_bad_inputs():
    with pytest.raises(InputError, match="steps"):
        interpolate(np.zeros(3), np.ones(3), 1)
    with pytest.raises(InputError, match="width"):
        interpolate(np.zeros(3), np.ones(4), 5)
    with pytest.raises(InputError, match="method"):
        interpolate(np.zeros(3), np.ones(3), 5, "cubic")
