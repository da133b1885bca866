"""`tune(path)`: time every engine this machine offers for one model, keep the fastest correct one per batch size
(a setup other than the peers' own only when it beats them by more than the noise margin: tune_timing.pick).

Candidates are the (backend, precision) pairs `latentforge.load` can run the artifact on here:
onnxruntime fp32 with its default session and with one intra-op thread or no spinning (so `auto` is never a
session setup slower than the default one a user would open), OpenVINO f32 and its bf16 hint, and the
exporter's fp16/int8/bf16 variant files found beside
an `.onnx`; for a checkpoint, torch fp32 and bf16 on the fused ops, the plain module at bf16 (autocast and
channels_last, no fused op: what a user would write) and the plain module under torch.compile, fp32 and bf16
(compiled on its first call, in the gate, and again for a second batch size, in the warm-up: both untimed, but
they count in what tuning takes). bf16 candidates need bf16 units (AVX512_BF16 or AMX, from runtime/machine.py):
elsewhere bf16 is emulated hundreds of times slower than fp32 and timing it would spend the whole budget.
Each candidate first passes a gate (PSNR >= `min_psnr` against the fp32 reference, on fresh latents: plain
PyTorch for a checkpoint, onnxruntime fp32 for an `.onnx`), then all are timed side by side, twice in
alternation, per batch size, and the faster round counts. The record (runtime/tune_record.py) keeps each
batch size's winner.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from latentforge.errors import InputError, LatentforgeError
from latentforge.latents import latents

from .artifact import check_model_file, is_onnx
from .backends import ORT_MODES, is_plan
from .graphs import GraphDecoder, open_graph
from .loading import _load_on, load
from .machine import Hardware, hardware, installed
from .ov_int8 import scratch as ov_int8_scratch
from .tune_record import TuneRecord, Winner, record_key, write_record
from .tune_timing import WARMUP, Candidate, pick, psnr_db, time_side_by_side  # noqa: F401  (tune's API)

GATE_LATENTS = 8


def compile_available() -> bool:
    """Whether torch.compile can build CPU kernels here: inductor compiles C++ with the system's compiler."""
    import shutil

    return any(shutil.which(cc) for cc in ("cc", "gcc", "clang", "g++"))


def _decoder_model(path: Path, threads: int | None):
    """The fp32 model the candidates are checked against, refusing what tune cannot time."""
    model = load(path, "onnxruntime" if is_onnx(path) and installed("onnxruntime") else
                 ("openvino" if is_onnx(path) else "torch"), threads)
    if model.codebook_size or model.onnx_source is None and is_onnx(path):
        raise InputError(f"{str(path)!r} is not a z -> image decoder; tune times decoders and generators "
                         "(a VAE or GAN checkpoint, or its exported decoder .onnx)")
    return model


@dataclass
class Field:
    """What `candidates` found for one artifact."""

    reference: Callable[[np.ndarray], np.ndarray]   # the fp32 reference the gate compares against
    peak: float                                     # the value range's width, PSNR's peak signal
    found: list[Candidate]
    rejected: dict[str, str]                        # label -> why it was left out
    latent_dim: int
    graph: bytes | None = None                      # a checkpoint's graph as exported for the graph backends
    model: object = None                            # a checkpoint's fp32 model on torch (its encoder: the filter)


def candidates(path: Path, facts: Hardware, threads: int | None, compile: bool = True,
               scratch: Path | None = None) -> Field:
    """Every candidate for the artifact at `path` on the machine `facts` describes, and what they are checked by.
    `scratch`: a folder for the OpenVINO int8 candidate's IR (runtime/ov_int8.py); without one it is left out."""
    reference_model = _decoder_model(path, threads)
    peak = float(reference_model.value_range[1] - reference_model.value_range[0])
    found, rejected = [], {}
    no_bf16 = "no bf16 units on this CPU (AVX512_BF16/AMX): emulated bf16 is far slower than fp32"

    def add(backend: str, precision: str, make: Callable[[], Callable], mode: str = "fused") -> None:
        label = Winner(backend, precision, 0.0, 0.0, mode).label
        if precision == "bf16" and not facts.bf16_units and not (backend == "torch" and facts.gpu):
            rejected[label] = no_bf16
            return
        try:
            found.append(Candidate(backend, precision, make(), mode))
        except LatentforgeError as e:
            rejected[label] = str(e)

    def openvino(source, precision: str) -> Callable:
        graph = open_graph("openvino", source, threads, f"{str(path)!r} on OpenVINO", precision)
        if graph.precision != precision:
            raise InputError(f"OpenVINO compiled {graph.precision} for the {precision} hint")
        return GraphDecoder(graph, str(path), reference_model.value_range)

    def int8(source) -> Callable:
        from .ov_int8 import decoder, quantize

        return decoder(quantize(source, reference_model.latent_dim, scratch), threads, reference_model.value_range,
                       f"{str(path)!r} quantized to int8 by NNCF")

    def add_int8(source) -> None:
        if scratch is not None and installed("openvino") and installed("nncf"):
            add("openvino", "int8", lambda: int8(source), "nncf")
        else:
            rejected["openvino int8 nncf"] = 'needs OpenVINO and NNCF: pip install "latentforge[openvino-int8]"'

    def ort_modes(graph) -> None:   # onnxruntime's own defaults are the "fused" candidate; its other setups
        for mode in ORT_MODES:
            if not (mode == "1thread" and (threads or facts.physical_cores) == 1):
                add("onnxruntime", "fp32", lambda m=mode: _load_on(path, "onnxruntime", threads, "fp32", graph=graph,
                                                                  mode=m).decode_float, mode)

    if is_onnx(path):
        reference = reference_model.decode_float
        found.append(Candidate(reference_model.backend, "fp32", reference))
        if reference_model.backend == "onnxruntime":
            ort_modes(None)
        add_int8(path)
        if installed("openvino") and reference_model.backend != "openvino":
            add("openvino", "fp32", lambda: load(path, "openvino", threads).decode_float)
        if installed("openvino"):
            add("openvino", "bf16", lambda: openvino(path, "bf16"))
        for precision in ("bf16", "fp16", "int8"):
            if path.with_name(f"{path.stem}.{precision}{path.suffix}").exists():
                for backend in ("onnxruntime", "openvino"):
                    if installed(backend) and not (backend == "openvino" and precision == "bf16"):
                        add(backend, precision, lambda b=backend, p=precision: load(path, b, threads, p).decode_float)
        return Field(reference, peak, found, rejected, reference_model.latent_dim)

    import torch

    from latentforge.checkpoint import load_checkpoint

    plain, _ = load_checkpoint(path)

    def reference(z: np.ndarray) -> np.ndarray:   # the plain-PyTorch module, no fused ops, no channels_last
        with torch.inference_mode():
            return plain.decode(torch.from_numpy(z)).float().numpy()

    found.append(Candidate("torch", "fp32", reference_model.decode_float))
    add("torch", "bf16", lambda: load(path, "torch", threads, "bf16").decode_float)

    def on_torch(precision: str, mode: str) -> Callable:
        from .torch_backend import TorchDecoder

        return TorchDecoder(load_checkpoint(path)[0], threads, precision, value_range=reference_model.value_range,
                            mode=mode)

    add("torch", "bf16", lambda: on_torch("bf16", "plain"), "plain")
    if not compile:
        rejected["torch fp32 compile"] = "left out by the caller (--no-compile)"
    elif compile_available():
        for precision in ("fp32", "bf16"):
            add("torch", precision, lambda p=precision: on_torch(p, "compile"), "compile")
    else:
        rejected["torch fp32 compile"] = "torch.compile needs a C++ compiler (cc) on the PATH for its CPU kernels"
    exported = None   # the checkpoint's graph, exported (and parity-checked) once for both graph backends
    if installed("onnxruntime"):
        def on_onnxruntime():
            nonlocal exported
            model = load(path, "onnxruntime", threads)
            exported = model.onnx_source
            return model.decode_float
        add("onnxruntime", "fp32", on_onnxruntime)
        if exported is not None:
            ort_modes(exported)
    if installed("openvino"):
        if exported is None:
            def export_once():
                nonlocal exported
                exported = load(path, "openvino", threads).onnx_source
                return openvino(exported, "fp32")
            add("openvino", "fp32", export_once)
        else:
            add("openvino", "fp32", lambda: openvino(exported, "fp32"))
        if exported is not None:
            add("openvino", "bf16", lambda: openvino(exported, "bf16"))
            add_int8(exported)
    return Field(reference, peak, found, rejected, reference_model.latent_dim, exported, reference_model)


def gate(found: list[Candidate], reference: Callable, peak: float, dim: int, min_psnr: float,
         rejected: dict[str, str]) -> dict[str, float]:
    """Drop (into `rejected`) every candidate below `min_psnr` on fresh latents; {label: PSNR} of the rest."""
    z = latents(GATE_LATENTS, dim)   # fresh entropy each run: a candidate cannot pass on one lucky draw
    expected = reference(z).astype(np.float64)
    passed = {}
    for candidate in list(found):
        try:
            value = psnr_db(candidate.run(z), expected, peak)
        except Exception as e:  # a backend that fails on real input is left out, with its first line
            rejected[candidate.label] = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
            found.remove(candidate)
            continue
        if value < min_psnr:
            rejected[candidate.label] = f"PSNR {value:.1f} dB against fp32 < {min_psnr:g} dB"
            found.remove(candidate)
        else:
            passed[candidate.label] = value
    return passed


def tune(path, batches=(1, 16, 128), min_psnr: float = 40.0, seconds: float = 20.0, threads: int | None = None,
         facts: Hardware | None = None, compile: bool = True) -> tuple[TuneRecord, Path]:
    """Measure every candidate for the model at `path` and write its tuning record; (record, where written).

    `seconds` is the timing budget, shared by every (candidate, batch size); loading and the gate come on top.
    `compile=False` leaves torch.compile out: compiling the faces decoder took 65 s (fp32, first) and 23 s (bf16)
    on a shared 2-core EPYC, and each new batch size compiles again, past tuning's 60 s target on such a CPU.
    """
    start = time.perf_counter()
    path = check_model_file(path)
    if is_plan(path):
        raise InputError(f"{str(path)!r} is a TensorRT engine, built for one precision already; tune its .onnx "
                         "or its checkpoint")
    if not (isinstance(min_psnr, (int, float)) and math.isfinite(min_psnr)):
        raise InputError(f"min_psnr must be a finite number of dB, e.g. 40, got {min_psnr!r}")
    if not (isinstance(seconds, (int, float)) and 0 < seconds < math.inf):
        raise InputError(f"seconds must be a positive number, got {seconds!r}")
    batches = tuple(batches)
    if not batches or any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1 for b in batches):
        raise InputError(f"batches must be positive integers like (1, 16, 128), got {batches!r}")
    facts = facts or hardware()
    with ov_int8_scratch() as scratch:
        return _tune(path, batches, min_psnr, seconds, threads, facts, compile, Path(scratch), start)


def _tune(path: Path, batches: tuple, min_psnr: float, seconds: float, threads: int | None, facts: Hardware,
          compile: bool, scratch: Path, start: float) -> tuple[TuneRecord, Path]:
    field = candidates(path, facts, threads, compile, scratch)
    reference, peak, found, rejected, dim = field.reference, field.peak, field.found, field.rejected, field.latent_dim
    psnr = gate(found, reference, peak, dim, min_psnr, rejected)
    if not found:
        raise InputError(f"no engine for {str(path)!r} passed the {min_psnr:g} dB gate: "
                         + "; ".join(f"{k}: {v}" for k, v in rejected.items()))
    share = seconds / (len(found) * len(batches))
    timings, winners = {}, {}
    for batch in sorted(set(int(b) for b in batches)):
        timings[batch] = time_side_by_side(found, latents(batch, dim, seed=0), share)
        label = pick(timings[batch])
        best = next(c for c in found if c.label == label)
        winners[batch] = Winner(best.backend, best.precision, timings[batch][label], psnr[label], best.mode)
    filter_winner, filter_graph, filter_int8 = None, None, None
    if field.model is not None:   # a checkpoint that encodes: its real-time filter, timed on its own
        from .tune_filter import tune_filter

        filter_winner, timings["filter"], filter_graph, filter_int8 = tune_filter(
            field.model, facts, threads, min_psnr, min(seconds / 4, 4.0), rejected, scratch)
        if filter_winner is None:
            del timings["filter"]
    record = TuneRecord(record_key(path, facts), winners, float(min_psnr), timings, rejected,
                        time.perf_counter() - start, filter=filter_winner)
    graph = field.graph if any(w.backend != "torch" for w in winners.values()) else None
    int8 = next((c.run.graph.source for c in found if c.mode == "nncf"), None)
    keep = int8 if any(w.mode == "nncf" for w in winners.values()) else None
    where = write_record(path, record, graph, keep, filter_int8 or (filter_graph if filter_winner else None))
    if any(w.backend == "openvino" for w in [*winners.values(), filter_winner] if w is not None):
        from .loading import keep_compiled

        keep_compiled(path, threads)   # OpenVINO's compiled winners kept beside the record, for load to import
    return record, where
