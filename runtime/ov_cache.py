"""OpenVINO's compiled models kept beside a tuning record, so loading a record's OpenVINO winner imports instead of
compiling (the faces decoder: 547 ms to compile against 167 ms to import, on a busy 2-core EPYC).

`tune` writes them: after the record, it opens each OpenVINO winner inside `beside(record_path, write=True)`, and
each OvGraph compiled then is exported to `NAME.tune.ov-<digest>.blob`, the digest naming what it was compiled from
(the graph's SHA-256, precision hint, threads, OpenVINO's version), with its own SHA-256 in `.blob.sha256`, both
written atomically. `load` only reads them (`beside(record_path)`): loading writes no file. OpenVINO itself checks a
blob's header only: a changed blob imported without complaint and ran wrong (measured), so a blob whose hash
differs, or whose name no longer matches its graph, is never imported: the graph is compiled instead (and kept
again only by the next `tune`).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
from pathlib import Path

from latentforge.errors import LatentforgeError
from latentforge.files import atomic_write_bytes

_FOLDER: contextvars.ContextVar[tuple[Path, bool] | None] = contextvars.ContextVar("ov_cache_record", default=None)


@contextlib.contextmanager
def beside(record_path: Path | None, write: bool = False):
    """Reuse the compiled OpenVINO models kept next to the record at `record_path` for what opens inside; with
    `write` (tune only), compile and keep them there too."""
    token = _FOLDER.set(None if record_path is None else (record_path, write))
    try:
        yield
    finally:
        _FOLDER.reset(token)


def writing() -> bool:
    """Whether what opens now keeps its compiled model (inside tune's `beside(..., write=True)`)."""
    current = _FOLDER.get()
    return current is not None and current[1]


def _digest(source, precision: str, threads: int, version: str) -> str:
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not isinstance(source, bytes) and Path(source).suffix == ".xml":   # OpenVINO IR: its weights too
        data += Path(source).with_suffix(".bin").read_bytes()
    text = f"{hashlib.sha256(data).hexdigest()} {precision} {threads} {version}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def blob_for(source, precision: str, threads: int, version: str) -> tuple[Path, bool] | None:
    """Where the compiled model for this graph lives beside the current record, and whether to write it there;
    None outside `beside`."""
    current = _FOLDER.get()
    if current is None:
        return None
    record, write = current
    stem = record.name.removesuffix(".json")
    return record.with_name(f"{stem}.ov-{_digest(source, precision, threads, version)}.blob"), write


def compile_or_import(core, model, config: dict, kept: tuple[Path, bool] | None):
    """(`core.compile_model(model, "CPU", config)`, False), or (its kept blob imported, True) when that is the one
    written for it; `kept` is `blob_for`'s answer."""
    blob, write = kept if kept is not None else (None, False)
    sha = blob.with_name(blob.name + ".sha256") if blob is not None else None
    if blob is not None and blob.is_file() and sha.is_file():
        data = blob.read_bytes()
        if hashlib.sha256(data).hexdigest() == sha.read_text().strip():
            return core.import_model(data, "CPU", config), True
    compiled = core.compile_model(model, "CPU", config)
    if blob is not None and write:
        try:
            data = compiled.export_model()
            data = data.getvalue() if hasattr(data, "getvalue") else bytes(data)   # a BytesIO in 2026.4
            atomic_write_bytes(blob, data)
            atomic_write_bytes(sha, hashlib.sha256(data).hexdigest().encode())
        except (OSError, RuntimeError, LatentforgeError):   # a read-only or full folder (InputError), a model
            pass                                               # OpenVINO cannot export: compiled each time
    return compiled, False
