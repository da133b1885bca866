"""kill -9 at random points of a training run, for each kind the issue names: every resumed run ends with the
uninterrupted run's weights and optimizer state, bit for bit. CI kills each kind at POINTS points drawn from a
seeded RNG (tests/kill_points.py); benchmarks/kills.py runs 20 per kind and commits what happened at each."""
import pytest

from kill_points import KINDS, kill_and_resume

POINTS = 2


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_run_killed_at_random_points_resumes_bit_identical(kind, tmp_path):
    result = kill_and_resume(kind, tmp_path, POINTS, seed=20240601)
    for point in result["points"]:
        assert point["resume_exit"] == 0 and point["difference"] is None, point
    # a delay under 0.95x the uninterrupted run's time lands before its end: at least one kill must be real
    assert any(point["killed"] for point in result["points"]), result
