"""kill -9 at random points of a training run, for each kind the issue names: every resumed run ends with the
uninterrupted run's weights and optimizer state, bit for bit. CI kills each kind at POINTS points drawn from a
seeded RNG (tests/kill_points.py), within the first 80 % of the run so the kill lands; benchmarks/kills.py runs 20
per kind over the whole run and commits what happened at each (results/kills.md)."""
import pytest

from kill_points import KINDS, kill_and_resume

POINTS = 1   # 4 kinds x 2 points took 86 s on the shared 2-core CPU; 1 point each keeps the file near 45 s


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_run_killed_at_random_points_resumes_bit_identical(kind, tmp_path):
    result = kill_and_resume(kind, tmp_path, POINTS, seed=20240601, latest=0.8)
    for point in result["points"]:
        assert point["killed"] and point["resume_exit"] == 0 and point["difference"] is None, point
