"""OpenVINO int8 by NNCF's post-training quantization: a `tune` candidate for every decoder (optional extra,
`pip install "latentforge[openvino-int8]"`).

The fp32 graph (the `.onnx`, or a checkpoint's graph exported in memory) is quantized on latents drawn like every
other input (`latentforge.latents`, fixed seeds), saved as OpenVINO IR (`.xml` + `.bin`) and compiled. When it wins
a batch size, `tune` keeps the IR beside the record (`NAME.tune.int8.xml`/`.bin`, hashed in the record) and `auto`
runs it. Measured on the shipped faces decoder (shared 2-core EPYC, AVX-512 VNNI, noisy): 46 dB against f32,
0.69 ms against 7.9 ms at batch 1, 27 against 52 ms at batch 16, 182 against 480 ms at batch 128.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from pathlib import Path

from latentforge.errors import BackendUnavailable, CheckpointError
from latentforge.files import atomic_write_bytes
from latentforge.latents import latents

from .graphs import GraphDecoder, verify_graph
from .openvino_backend import OvGraph, import_openvino

CALIBRATION = (8, 16)   # batches x latents, as the exporter's int8 calibration
MODE = "nncf"


def import_nncf():
    try:
        import nncf
    except ImportError:
        raise BackendUnavailable('OpenVINO int8 needs NNCF: pip install "latentforge[openvino-int8]"') from None
    return nncf


def quantize(source: str | Path | bytes, latent_dim: int, folder: Path, feeds: list | None = None,
             name: str = "int8") -> Path:
    """The fp32 graph `source` quantized to int8, written as `folder/NAME.xml` (+ `.bin`); the `.xml` path.
    Calibrated on latents, or on `feeds` (a list of input dicts: the filter graph's frames)."""
    ov, nncf = import_openvino(), import_nncf()
    model = ov.Core().read_model(source if isinstance(source, bytes) else str(source))
    batches, size = CALIBRATION
    calibration = nncf.Dataset(feeds if feeds is not None else
                               [latents(size, latent_dim, seed=1000 + i) for i in range(batches)])
    # NNCF counts dataset items (batches); its progress bars and warnings are not the caller's output
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantized = nncf.quantize(model, calibration, subset_size=len(feeds) if feeds is not None else batches)
    xml = folder / f"{name}.xml"
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return xml


def decoder(xml: Path, threads: int | None, value_range: tuple[float, float], label: str,
            verify_by: dict[str, str] | None = None) -> GraphDecoder:
    """The int8 IR as a decoder. `verify_by`: the metadata of the fp32 graph it was quantized from; its golden check
    is run on the IR at int8's tolerance (what `load(..., verify=True)` runs is what it checks), so an IR whose
    weights are damaged or foreign is a CheckpointError even when the tuning record's hash was written for it."""
    graph = OvGraph(xml, threads, label, "int8")
    if verify_by is not None:
        verify_graph(graph, label, verify_by)
    return GraphDecoder(graph, label, value_range)


def ir_sha256(xml: Path) -> str:
    digest = hashlib.sha256()
    for part in (xml, xml.with_suffix(".bin")):
        digest.update(part.read_bytes())
    return digest.hexdigest()


def keep_beside(xml: Path, target_xml: Path) -> str:
    """Copy the IR to `target_xml` (+ `.bin`, written first, each atomically); its sha256."""
    atomic_write_bytes(target_xml.with_suffix(".bin"), xml.with_suffix(".bin").read_bytes())
    atomic_write_bytes(target_xml, xml.read_bytes())
    return ir_sha256(target_xml)


def checked_ir(xml: Path, sha256: str) -> Path:
    """`xml` when it and its `.bin` are the IR the record hashed, else a CheckpointError."""
    if not (xml.is_file() and xml.with_suffix(".bin").is_file()) or ir_sha256(xml) != sha256:
        raise CheckpointError(f"the int8 model {str(xml)!r} named by the tuning record is missing or changed; "
                              "rerun `latentforge tune`")
    return xml


def scratch() -> tempfile.TemporaryDirectory:
    """A folder for the candidate's IR while `tune` runs."""
    return tempfile.TemporaryDirectory(prefix="latentforge-int8-", dir=os.environ.get("TMPDIR"))
