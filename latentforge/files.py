"""Atomic file writes: a temp file in the destination folder, fsync, os.replace."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import InputError


def check_output_path(path: str | os.PathLike) -> Path:
    """Return `path` as a Path after checking that its folder exists and is writable."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder {str(folder)!r} does not exist; create it first or choose another path")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {str(folder)!r} is not writable; choose another path")
    if path.is_dir():
        raise InputError(f"output path {str(path)!r} is a folder; give a file name")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` and move the result to `path` only if it succeeded.

    On any failure the temp file is removed and `path` is left as it was; a failed system call (ENOSPC,
    EACCES, EIO) is an InputError naming the path.
    """
    path = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would have
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:   # disk full, quota, permission, I/O error
            code = errno.errorcode.get(e.errno, e.errno)
            raise InputError(f"could not write {str(path)!r}: {e.strerror or e} (errno {code}); "
                             "free some space or choose another path (any earlier file there is unchanged)") from None
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


def write_report(folder: str | os.PathLike, stem: str, lines: list[str], report: dict, machine: str,
                 timed: bool = False) -> None:
    """A benchmark's results: `stem.md` (the lines, then the machine) and `stem.json`, both atomic; the lines are
    printed too. Its JSON keeps float-like values (NumPy scalars) as plain floats. `timed`: the report has
    timings, taken while other jobs may have shared the cores."""
    import json

    note = ("timings taken while other jobs shared the cores (load average in the JSON): noisy" if timed
            else "run under load from other jobs (no timings here)")
    lines = lines + ["", f"Machine: {machine}; {note}."]
    text = "\n".join(lines)
    atomic_write_bytes(Path(folder) / f"{stem}.md", (text + "\n").encode())
    atomic_write_bytes(Path(folder) / f"{stem}.json", json.dumps(report, indent=2, default=float).encode())
    print(text)
