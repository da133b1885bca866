"""Atomic file writes: a temp file in the destination folder (`.NAME.<host tag>-<pid>.<random>.tmp`), fsync,
os.replace; the temp files of a writer that was killed are removed by the next write to the same path."""
from __future__ import annotations

import errno
import hashlib
import os
import re
import socket
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
    return atomic_write_all([(path, write)])[0]


def _writer_tag() -> str:
    """Who may judge a writer dead by its pid: this host and this pid namespace (a container, another machine on
    a shared folder, sees other pids), as 8 hex digits."""
    try:
        space = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        space = 0
    return hashlib.sha256(f"{socket.gethostname()} {space}".encode()).hexdigest()[:8]


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_writer_tag()}-{os.getpid()}."


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):   # EPERM: alive, someone else's; others: not ours to judge
        return True
    return True


def remove_dead_temps(paths: list[Path]) -> list[Path]:
    """Remove the temp files a killed writer (kill -9, a power cut) left beside each of `paths`:
    `.NAME.<tag>-<pid>.<random>.tmp` written from this host and pid namespace (the tag) by a process that no
    longer runs. A live writer's file, or one from another host or container, is never touched. Each folder is
    listed once. Returns what was removed."""
    if os.name != "posix":
        return []
    removed, tag = [], _writer_tag()
    by_folder: dict[Path, set[str]] = {}
    for path in paths:
        by_folder.setdefault(path.parent, set()).add(path.name)
    for folder, targets in by_folder.items():
        try:
            names = os.listdir(folder if str(folder) else ".")
        except OSError:
            continue
        for name in names:
            match = _TEMP.fullmatch(name)
            if not (match and match["name"] in targets and match["tag"] == tag):
                continue
            pid = int(match["pid"])
            if pid != os.getpid() and not _writer_alive(pid):
                try:
                    (folder / name).unlink()
                    removed.append(folder / name)
                except OSError:
                    pass
    return removed


_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<tag>[0-9a-f]{8})-(?P<pid>[0-9]{1,7})\.[a-z0-9_]{8}\.tmp", re.ASCII | re.DOTALL)


def atomic_write_all(items: list[tuple[str | os.PathLike, Callable[[str], None]]]) -> list[Path]:
    """`atomic_write` for files that belong together (a decompressed stream's images): each is written to its temp
    file first, and only when every one succeeded are they moved into place, so a failure (a disk that fills at
    the third) leaves none of them and every earlier file at those paths as it was."""
    paths = [check_output_path(path) for path, _ in items]
    temps: list[str] = []
    current = paths[0] if paths else Path(".")
    try:
        remove_dead_temps(paths)
        for current, (_, write) in zip(paths, items):
            # who writes it in the name: a later write to the same path removes what a killed writer left
            fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(current), suffix=".tmp", dir=current.parent)
            os.close(fd)
            temps.append(tmp)
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would have
        for current, tmp in zip(paths, temps):
            os.replace(tmp, current)
    except BaseException as e:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:   # disk full, quota, permission, I/O error
            code = errno.errorcode.get(e.errno, e.errno)
            also = f" (nor the {len(paths) - 1} other files written with it)" if len(paths) > 1 else ""
            raise InputError(f"could not write {str(current)!r}{also}: {e.strerror or e} (errno {code}); free some "
                             "space or choose another path (any earlier file there is unchanged)") from None
        raise
    return paths


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
