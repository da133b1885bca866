"""The whole export: model -> part -> fp32 ONNX -> onnxslim -> precision variant -> gate -> file(s).

Every graph is checked against the part's PyTorch module on fresh inputs before
anything is written; a variant that fails its tolerances or its PSNR gate raises
ParityError with the full report and leaves no file behind.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from latentforge.errors import InputError, ParityError
from latentforge.files import atomic_write_bytes, check_output_path
from latentforge.golden import KEY as GOLDEN
from latentforge.golden import golden_verdicts

from . import precision as prec
from .graph import DEFAULT_OPSET, ExportResult, Part, export_graph, ort_runner, stamp, validate
from .parity import ATOL_OF_PEAK, MIN_PSNR
from .parts import build_part
from .source import Source, checkpoint_source

FORMATS = ("onnx", "tensorrt", "triton")
CALIBRATION = (8, 16)  # batches x images: what int8 ranges and fp16 overflow are measured on


@dataclass
class ExportOptions:
    part: str = "decoder"
    precision: str = "fp32"
    format: str = "onnx"
    opset: int = DEFAULT_OPSET
    batch: tuple[int, int, int] = (1, 16, 128)  # TensorRT profile min/opt/max; Triton's max_batch_size
    atol: float | None = None                   # None: the precision's default
    rtol: float | None = None
    min_psnr: float | None = None               # None: the precision's default gate
    slim: bool = True
    triton_backend: str = "onnxruntime"         # onnxruntime | tensorrt (what --format triton packages)
    fp16_io: bool = False                       # fp16: float inputs/outputs in fp16 too (default: kept fp32)

    def check(self) -> None:
        if self.precision not in prec.PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(prec.PRECISIONS)}, got {self.precision!r}")
        if self.format not in FORMATS:
            raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if not 14 <= self.opset <= 23:
            raise InputError(f"opset must be in 14..23, got {self.opset}")
        for name in ("atol", "rtol", "min_psnr"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise InputError(f"tolerances must be >= 0, got {name}={value}")
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise InputError(f"--batch must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, got {self.batch}")
        if self.fp16_io and self.precision != "fp16":
            raise InputError(f"--fp16-io goes with --precision fp16, not {self.precision}")
        if self.fp16_io and self.part == "prior":
            raise InputError("--fp16-io does not apply to --part prior: its key/value cache is float32 in the sampling "
                             "loop; drop --fp16-io (the fp16 prior still computes in fp16 inside)")
        if self.precision == "bf16" and (self.format == "tensorrt" or
                                         (self.format == "triton" and self.triton_backend == "tensorrt")):
            raise InputError("TensorRT engines are fp32, fp16 or int8 (TensorRT 11 takes precision from the graph, "
                             "and no bf16 graph is made); use --precision fp16, or bf16 with --format onnx")
        if self.triton_backend not in ("onnxruntime", "tensorrt"):
            raise InputError(f"--triton-backend must be onnxruntime or tensorrt, got {self.triton_backend!r}")


def _suffix_check(out: Path, fmt: str) -> None:
    want = {"onnx": ".onnx", "tensorrt": ".plan"}.get(fmt)
    if want and out.suffix.lower() != want:
        raise InputError(f"--format {fmt} writes a {want} file; give -o NAME{want}, got {str(out)!r}")
    if fmt == "triton" and out.exists():
        raise InputError(f"{str(out)!r} already exists; a Triton model folder is written whole, "
                         "so remove it or choose another name")


def openvino_has_bf16() -> bool:
    """Whether OpenVINO is installed and its CPU plugin computes in bf16 here (AMX or AVX512-BF16)."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_bf16_runner(graph: bytes):
    """The graph on OpenVINO's CPU plugin at bf16 inference precision: a runtime that really computes in bf16."""
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(graph)
        model = core.read_model(str(path))
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    names = [output.get_any_name() for output in model.outputs]   # compiling may merge a tensor's names

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = compiled(feed)
        return {name: result[i] for i, name in enumerate(names)}

    return run


def _fail(result: ExportResult, what: str, out: Path | None) -> ParityError:
    bad = "; ".join(p.line() for p in result.parity if not p.passed)
    where = f" to {str(out)!r}" if out else ""
    return ParityError(f"{what}; nothing written{where}: {bad}", result)


@dataclass
class Prepared:
    """A part's fp32 graph, cleaned up and checked against PyTorch: what every precision variant starts from."""
    part: Part
    fp32: onnx.ModelProto
    details: dict


def prepare(source: Source | str | os.PathLike, opts: ExportOptions, out: Path | None = None) -> Prepared:
    """The part's fp32 graph; ParityError (naming `out`, which stays unwritten) if onnxruntime disagrees."""
    source = source if isinstance(source, Source) else checkpoint_source(source)
    part = build_part(source, opts.part)
    fp32 = onnx.load_from_string(export_graph(part, opts.opset))
    details: dict = {"part": part.name, "format": opts.format}
    if opts.slim:
        fp32, before, after = prec.slim(fp32)
        details["ops_before_slim"], details["ops_after_slim"] = before, after
    # The fp32 graph must match PyTorch before any variant of it is worth making.
    fp32_only = opts.precision == "fp32"
    check = validate(part, ort_runner(fp32.SerializeToString()), atol=opts.atol if fp32_only else None,
                     rtol=opts.rtol if fp32_only else None)
    details["fp32_parity"] = [p.to_dict() for p in check]
    if not all(p.passed for p in check):
        raise _fail(ExportResult(None, check, part.metadata_at("fp32"), details),
                    "onnxruntime's fp32 graph disagrees with PyTorch", out)
    return Prepared(part, fp32, details)


def finish(prepared: Prepared, out: Path, opts: ExportOptions, timing_cache=None) -> ExportResult:
    """Make `opts.precision`'s variant of the prepared graph, gate it, and write it in `opts.format` to `out`."""
    part, fp32 = prepared.part, prepared.fp32
    details = {**prepared.details, "precision": opts.precision}
    feeds = [] if opts.precision == "fp32" else [part.make_inputs(CALIBRATION[1], 1000 + i)
                                                 for i in range(CALIBRATION[0])]
    written, measured, kept = prec.variant(fp32, opts.precision, feeds, opts.fp16_io)
    min_psnr = opts.min_psnr if opts.min_psnr is not None else MIN_PSNR[opts.precision]
    tolerances = dict(atol=opts.atol, rtol=opts.rtol, atol_of_peak=ATOL_OF_PEAK.get(opts.precision),
                      min_psnr=min_psnr)
    meta = part.metadata_at(opts.precision, _gate(part, opts, min_psnr), opts.fp16_io)
    stamp(written, meta)
    details["fp32_kept_nodes"] = kept
    graph = written.SerializeToString()

    if opts.format == "tensorrt" or (opts.format == "triton" and opts.triton_backend == "tensorrt"):
        from .tensorrt import build_engine, engine_runner

        engine = build_engine(graph, part, opts.precision, opts.batch, meta, timing_cache)
        run = engine_runner(engine.plan)
        parity = validate(part, run, batches=sorted({opts.batch[0], opts.batch[1]}), **tolerances)
        details["engine"] = engine.sidecar
    else:
        engine = None
        run = ort_runner(measured.SerializeToString())
        if opts.precision == "bf16":
            bf16 = openvino_bf16_runner(graph) if openvino_has_bf16() else None
            run = bf16 or run
            details["measured_by"] = ("OpenVINO CPU at bf16 inference precision" if bf16 else
                                      "bf16 emulation on onnxruntime (weights and activations rounded through bf16)")
        parity = validate(part, run, **tolerances)
    # the golden check the file carries must hold here, or `load(..., verify=True)` would refuse what was written
    parity += golden_verdicts(meta[GOLDEN], run, opts.precision)
    result = ExportResult(None, parity, meta, details)
    if not result.passed:
        raise _fail(result, f"the {opts.precision} {part.name} fails its check against PyTorch", out)

    if opts.format == "onnx":
        atomic_write_bytes(out, graph)
    elif opts.format == "tensorrt":
        engine.write(out)
    else:
        from .triton import write_repository

        write_repository(out, part, graph if engine is None else engine, opts.batch)
    details["size_bytes"] = _size(out)
    result.path = out
    return result


def _gate(part: Part, opts: ExportOptions, min_psnr: float | None) -> dict:
    """The tolerance `validate` applies at `opts.precision`, in the form the golden check stores."""
    if opts.precision == "fp32" or opts.atol is not None:
        fp32 = opts.precision == "fp32"
        atol = opts.atol if opts.atol is not None else part.atol
        rtol = opts.rtol if opts.rtol is not None else (part.rtol if fp32 else 0.0)
        return {"atol": atol, "rtol": rtol, "min_psnr": min_psnr}
    return {"atol_of_peak": ATOL_OF_PEAK[opts.precision], "min_psnr": min_psnr}


def _checked_out(out, opts: ExportOptions) -> Path:
    opts.check()
    _suffix_check(Path(out), opts.format)
    return check_output_path(out)


def export(source: Source | str | os.PathLike, out: str | os.PathLike, options: ExportOptions | None = None,
           timing_cache: str | os.PathLike | None = None) -> ExportResult:
    """Export one part of a checkpoint (or a foreign Source) at one precision to `out`; see ExportOptions."""
    opts = options or ExportOptions()
    out = _checked_out(out, opts)
    if opts.format == "tensorrt" or (opts.format == "triton" and opts.triton_backend == "tensorrt"):
        from .tensorrt import gpu, import_tensorrt

        import_tensorrt(), gpu()  # say what is missing before minutes of export and calibration
    return finish(prepare(source, opts, out), out, opts, timing_cache)


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                atol: float = 1e-4, rtol: float = 1e-3) -> ExportResult:
    """A checkpoint's decoder as one fp32 .onnx file, without the onnxslim pass; ParityError (writing nothing)
    if onnxruntime disagrees with PyTorch."""
    return export(checkpoint, out, ExportOptions(opset=opset, atol=atol, rtol=rtol, slim=False))


def export_precisions(source: Source | str | os.PathLike, outs: dict[str, str | os.PathLike],
                      options: ExportOptions | None = None) -> dict[str, ExportResult]:
    """One part at several precisions ({precision: out}) from one fp32 export; stops at the first failure."""
    base = options or ExportOptions()
    plans = {p: (replace(base, precision=p), out) for p, out in outs.items()}
    checked = {p: _checked_out(out, o) for p, (o, out) in plans.items()}
    prepared = prepare(source, replace(base, precision="fp32", atol=None, rtol=None))
    return {p: finish(prepared, checked[p], o) for p, (o, _) in plans.items()}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
