import os
import stat

import pytest

from latentforge.errors import InputError
from latentforge.files import atomic_write, atomic_write_bytes


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert os.listdir(tmp_path) == ["out.bin"]


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def half_then_crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_missing_folder_or_folder_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        atomic_write_bytes(tmp_path / "no" / "x.bin", b"")
    with pytest.raises(InputError, match="is a folder"):
        atomic_write_bytes(tmp_path, b"")
