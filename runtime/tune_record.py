"""The tuning record: which (backend, precision) was fastest per batch size for one model file on one machine.

Like TensorRT's timing cache, a record holds only while what it measured still holds: it is keyed by the
CPU model and ISA, the GPUs, the library versions and the SHA-256 of the model file. A record whose key
differs from this machine's is ignored with one warning line that names the first difference. It is a
small JSON file written atomically beside the artifact (`faces.onnx` -> `faces.tune.json`), or, where
that folder is not writable, in `$XDG_CACHE_HOME/latentforge/tune/`.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from latentforge.errors import CheckpointError
from latentforge.files import atomic_write_bytes

from .machine import Hardware, hardware

FORMAT = 1
LIBRARIES = ("numpy", "onnxruntime", "openvino", "torch", "latentforge")


class StaleRecordWarning(UserWarning):
    """A tuning record measured on another machine, other library versions or another model file."""


@dataclass(frozen=True)
class Winner:
    backend: str
    precision: str
    p50_ms: float
    psnr_db: float       # against fp32 on fresh latents; inf where bit-identical
    mode: str = "fused"  # torch: fused ops, the plain module, or it compiled; openvino int8: "nncf" (its own PTQ)

    @property
    def engine(self) -> tuple[str, str, str]:
        return self.backend, self.precision, self.mode

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}" + ("" if self.mode == "fused" else f" {self.mode}")


@dataclass
class TuneRecord:
    key: dict                               # what must match here: see record_key
    winners: dict[int, Winner]              # batch size -> the candidate tune_timing.pick kept
    min_psnr: float
    timings: dict = field(default_factory=dict)   # batch (or "filter") -> candidate label -> p50 ms
    rejected: dict[str, str] = field(default_factory=dict)               # candidate label -> why it was left out
    seconds: float = 0.0                                                   # what tuning took, loads included
    graph_sha256: str = ""   # a checkpoint's graph, saved beside the record so loading it skips the export
    graph_path: Path | None = field(default=None, compare=False)          # that file, once read and verified
    int8_sha256: str = ""    # an OpenVINO int8 winner's IR (runtime/ov_int8.py), kept beside the record
    int8_path: Path | None = field(default=None, compare=False)           # its .xml, once verified
    filter: Winner | None = None  # the real-time filter's engine (runtime/tune_filter.py), for a model that encodes
    filter_sha256: str = ""       # its graph, kept beside the record
    filter_path: Path | None = field(default=None, compare=False)         # that file, once read and verified
    path: Path | None = field(default=None, compare=False)                # where this record was read from

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("graph_path")
        data.pop("int8_path")
        data.pop("filter_path")
        data.pop("path")
        data["filter"] = None if self.filter is None else asdict(self.filter)
        data["format"] = FORMAT
        data["winners"] = {str(b): asdict(w) for b, w in self.winners.items()}
        data["timings"] = {str(b): t for b, t in self.timings.items()}   # "filter": the filter's timings
        return data

    @classmethod
    def from_json(cls, data: dict) -> TuneRecord:
        """The record in `data` (parsed JSON); ValueError (or KeyError, TypeError) for anything else."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format') if isinstance(data, dict) else data!r:.40}, "
                             f"expected {FORMAT}")
        key = dict(data["key"])
        if not isinstance(key.get("libraries", {}), dict):
            raise ValueError(f"key.libraries is {type(key['libraries']).__name__}, expected an object")
        winners = {int(b): _winner(w) for b, w in dict(data["winners"]).items()}
        if not winners or min(winners) < 1:
            raise ValueError(f"winners for batch sizes {sorted(winners)[:4]}, expected one or more sizes >= 1")
        return cls(key=key, min_psnr=float(data["min_psnr"]), seconds=float(data.get("seconds", 0)),
                   winners=winners, timings={b if b == "filter" else int(b): dict(t)
                                             for b, t in dict(data.get("timings", {})).items()},
                   rejected=dict(data.get("rejected", {})), graph_sha256=str(data.get("graph_sha256", "")),
                   int8_sha256=str(data.get("int8_sha256", "")),
                   filter=None if data.get("filter") is None else _winner(data["filter"]),
                   filter_sha256=str(data.get("filter_sha256", "")))

    def winner_for(self, batch: int) -> Winner:
        """The winner of the largest tuned batch size <= `batch` (the smallest one below all of them)."""
        sizes = sorted(self.winners)
        below = [b for b in sizes if b <= batch]
        return self.winners[below[-1] if below else sizes[0]]

    def because(self) -> str:
        per_batch = ", ".join(f"batch {b}: {w.label} {w.p50_ms:.3g} ms"
                              f"{'' if w.psnr_db == float('inf') else f' ({w.psnr_db:.0f} dB)'}"
                              for b, w in sorted(self.winners.items()))
        kept = "" if self.filter is None else f"; filter: {self.filter.label} {self.filter.p50_ms:.3g} ms"
        return f"tuning record for this machine: picked by timing {per_batch}{kept}"


def _winner(entry: dict) -> Winner:
    """A winner as `tune` writes it: a known backend, precision and torch mode, and two numbers."""
    from .backends import ENGINE_MODES, NAMES, ORT_MODES, PRECISIONS, TORCH_MODES

    w = Winner(**dict(entry))
    owner = {"nncf": "openvino", **{m: "onnxruntime" for m in ORT_MODES}, **{m: "torch" for m in TORCH_MODES[1:]}}
    if w.backend not in NAMES or w.precision not in PRECISIONS or w.mode not in ENGINE_MODES \
            or owner.get(w.mode, w.backend) != w.backend:
        raise ValueError(f"winner {w.backend!r:.20} {w.precision!r:.20} {w.mode!r:.20} is not an engine latentforge "
                         "runs")
    return Winner(w.backend, w.precision, float(w.p50_ms), float(w.psnr_db), w.mode)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {}
    for dist in LIBRARIES:
        try:
            found[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return found


def record_key(model_path: Path, facts: Hardware | None = None) -> dict:
    facts = facts or hardware()
    return {"model_sha256": file_sha256(model_path), "cpu": facts.cpu, "isa": sorted(facts.features),
            "physical_cores": facts.physical_cores, "gpus": list(facts.gpus), "libraries": library_versions()}


def beside(model_path: Path) -> Path:
    return model_path.with_name(f"{model_path.stem}.tune.json")


def in_cache(model_path: Path) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latentforge" / "tune"
    where = hashlib.sha256(str(model_path.resolve()).encode()).hexdigest()[:16]  # by place: finding it hashes no data
    return root / f"{model_path.stem}-{where}.tune.json"


def writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def graph_beside(record_path: Path) -> Path:
    return record_path.with_name(record_path.name.removesuffix(".json") + ".onnx")


def filter_beside(record_path: Path, int8: bool = False) -> Path:
    return record_path.with_name(record_path.name.removesuffix(".json") + (".filter.int8.xml" if int8 else
                                                                             ".filter.onnx"))


def int8_beside(record_path: Path) -> Path:
    return record_path.with_name(record_path.name.removesuffix(".json") + ".int8.xml")


def write_record(model_path: Path, record: TuneRecord, graph: bytes | None = None, int8: Path | None = None,
                 filter_graph: bytes | Path | None = None) -> Path:
    """Beside the model when its folder is writable, else in the cache folder; atomically either way.
    `graph`: a checkpoint's exported graph, saved next to the record (first, so a record never names a
    missing graph) for `load` to open instead of exporting again. `int8`: an OpenVINO int8 winner's IR (`.xml`),
    copied beside the record the same way. `filter_graph`: the filter graph the record's `filter` was timed on (bytes), or its int8 IR (`.xml`)."""
    if writable(model_path.parent):
        target = beside(model_path)
    else:
        target = in_cache(model_path)
        target.parent.mkdir(parents=True, exist_ok=True)
    if graph is not None:
        atomic_write_bytes(graph_beside(target), graph)
        record.graph_sha256 = hashlib.sha256(graph).hexdigest()
    if int8 is not None:
        from .ov_int8 import keep_beside

        record.int8_sha256 = keep_beside(int8, int8_beside(target))
    if isinstance(filter_graph, Path):   # an int8 filter IR (runtime/tune_filter.py)
        from .ov_int8 import keep_beside

        record.filter_sha256 = keep_beside(filter_graph, filter_beside(target, int8=True))
    elif filter_graph is not None:
        atomic_write_bytes(filter_beside(target), filter_graph)
        record.filter_sha256 = hashlib.sha256(filter_graph).hexdigest()
    return atomic_write_bytes(target, json.dumps(record.to_json(), indent=2).encode())


def read_record(path: Path) -> TuneRecord:
    try:
        return TuneRecord.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"tuning record {str(path)!r} is unreadable ({e}); delete it or rerun "
                              "`latentforge tune`") from None


def mismatch(found: dict, here: dict) -> str | None:
    """The first difference between a record's key and this machine's, in words; None when they match."""
    for name in ("model_sha256", "cpu", "isa", "physical_cores", "gpus"):
        if found.get(name) != here[name]:
            if name == "model_sha256":
                return "the model file changed since it was tuned"
            return f"{name} {found.get(name)!r} there, {here[name]!r} here"
    theirs = found.get("libraries", {})
    for lib, version in here["libraries"].items():
        if theirs.get(lib) != version:
            return f"{lib} {theirs.get(lib, '(not installed)')} there, {version} here"
    extra = sorted(set(theirs) - set(here["libraries"]))
    return f"{extra[0]} {theirs[extra[0]]} there, not installed here" if extra else None


def matching_record(model_path: Path, facts: Hardware | None = None) -> TuneRecord | None:
    """The record that applies to this model here, or None; a stale or unreadable one warns in one line."""
    candidates = [p for p in (beside(model_path),) if p.is_file()]
    if not candidates:
        cached = in_cache(model_path)
        candidates = [cached] if cached.is_file() else []
    if not candidates:
        return None
    path = candidates[0]
    try:
        record = read_record(path)
    except CheckpointError as e:
        warnings.warn(f"{e}; using the default backend", StaleRecordWarning, stacklevel=3)
        return None
    why = mismatch(record.key, record_key(model_path, facts))
    if why:
        warnings.warn(f"tuning record {str(path)!r} ignored: {why}; rerun `latentforge tune {model_path}`",
                      StaleRecordWarning, stacklevel=3)
        return None
    record.path = path
    if any(w.mode == "nncf" for w in record.winners.values()):
        from .ov_int8 import checked_ir

        try:
            record.int8_path = checked_ir(int8_beside(path), record.int8_sha256)
        except CheckpointError as e:
            warnings.warn(f"tuning record {str(path)!r} ignored: {e}", StaleRecordWarning, stacklevel=3)
            return None
    graph = graph_beside(path)
    if record.graph_sha256 and graph.is_file() and file_sha256(graph) == record.graph_sha256:
        record.graph_path = graph   # else the graph backends export the checkpoint again, as without a record
    if record.filter is not None and record.filter.mode == "nncf":
        from .ov_int8 import checked_ir

        try:
            record.filter_path = checked_ir(filter_beside(path, int8=True), record.filter_sha256)
        except CheckpointError as e:   # the filter runs onnxruntime fp32, exported again, as without a record
            warnings.warn(f"tuning record {str(path)!r}: its filter is not used: {e}", StaleRecordWarning,
                          stacklevel=3)
            record.filter = None
        return record
    graph = filter_beside(path)
    if record.filter_sha256 and graph.is_file() and file_sha256(graph) == record.filter_sha256:
        record.filter_path = graph  # else the filter graph is exported again on first use
    return record
