"""Checkpoint -> ONNX decoder/generator with the dynamo exporter, checked against PyTorch before it is written.

The graph maps `z` float32 [N, D] to `image` float32 [N, C, H, W] in the model's value
range, with a dynamic batch. Noise never lives in the graph: z is an input.
"""
from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from latentforge import __version__
from latentforge.checkpoint import PREFIX as META
from latentforge.checkpoint import CheckpointInfo, load_checkpoint
from latentforge.errors import ExportError, InputError, ParityError
from latentforge.files import atomic_write_bytes, check_output_path
from latentforge.latents import latents

from .parity import OutputParity, compare

DEFAULT_OPSET = 18
PARITY_BATCHES = (1, 16)


@dataclass
class ExportResult:
    path: Path | None
    parity: list[OutputParity] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # precision, gate, op counts, fp32-kept nodes, engine facts

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.parity)

    def report(self) -> dict:
        return {"path": str(self.path) if self.path else None, "passed": self.passed,
                "metadata": self.metadata, **self.details, "outputs": [p.to_dict() for p in self.parity]}


class Decoder(torch.nn.Module):
    """z [N, D] -> image [N, C, H, W]: the part of any latentforge model that gets exported."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)


def metadata(info: CheckpointInfo, part: str = "decoder", precision: str = "fp32") -> dict[str, str]:
    """The `latentforge.*` metadata_props of a checkpoint's exported graph."""
    cfg = info.config
    return metadata_props(info.kind, part, cfg["latent_dim"], (cfg["channels"], cfg["image_size"], cfg["image_size"]),
                          info.value_range, info.data, precision, info.extra.get("attributes"))


def metadata_props(kind: str, part: str, latent_dim: int, image_shape, value_range, data: str, precision: str,
                   attributes: str | None = None) -> dict[str, str]:
    """`image_shape` is (C, H, W). The runtime reads these keys; `precision` is fp32 | fp16 | bf16 | int8."""
    meta = {
        "version": __version__,
        "kind": kind,
        "part": part,
        "precision": precision,
        "latent_dim": str(int(latent_dim)),
        "image_shape": json.dumps([int(v) for v in image_shape]),
        "value_range": json.dumps([float(v) for v in value_range]),
        "data": data,
    }
    if attributes is not None:
        meta["attributes"] = attributes
    return {META + k: v for k, v in meta.items()}


def to_onnx_bytes(model: torch.nn.Module, latent_dim: int, meta: dict[str, str], opset: int = DEFAULT_OPSET) -> bytes:
    """Export `model.decode` with a dynamic batch; return the serialized ModelProto."""
    example = {"z": torch.from_numpy(latents(2, latent_dim, seed=0))}
    return graph_bytes(Decoder(model), example, ["image"], meta, opset)


def graph_bytes(module: torch.nn.Module, example: dict[str, torch.Tensor], output_names: list[str],
                meta: dict[str, str], opset: int = DEFAULT_OPSET, fixed: tuple[str, ...] = ()) -> bytes:
    """Export `module(**example)` with dim 0 of every input but those in `fixed` as one dynamic batch."""
    import onnx

    batch = torch.export.Dim("batch")
    dynamic = {name: ({} if name in fixed else {0: batch}) for name in example}
    # The exporter logs about optional torchvision ops and deprecated pytree APIs; neither concerns us.
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(module.eval(), tuple(example.values()), dynamo=True,
                                        input_names=list(example), output_names=output_names,
                                        dynamic_shapes=dynamic, opset_version=opset, verbose=False)
        except Exception as e:
            raise ExportError(f"torch.onnx could not export the {meta.get(META + 'kind')} "
                              f"{meta.get(META + 'part', 'decoder')} at opset {opset}: "
                              f"{str(e).strip().splitlines()[0]}") from e
        finally:
            onnx_logger.setLevel(level)
    proto = program.model_proto
    set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def set_metadata(proto, meta: dict[str, str]) -> None:
    """Stamp producer and `latentforge.*` metadata_props on a ModelProto (replacing any there)."""
    proto.producer_name = "latentforge"
    proto.producer_version = __version__
    del proto.metadata_props[:]
    for key, value in sorted(meta.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def check_parity(model: torch.nn.Module, onnx_bytes: bytes, latent_dim: int, value_range: tuple[float, float],
                 atol: float, rtol: float, batches=PARITY_BATCHES) -> list[OutputParity]:
    """Run onnxruntime and PyTorch on fresh latents at each batch size and compare."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    peak = value_range[1] - value_range[0]
    results = []
    for n in batches:
        z = latents(n, latent_dim)  # fresh entropy every export
        with torch.inference_mode():
            ref = model.decode(torch.from_numpy(z)).numpy()
        got = session.run(["image"], {"z": z})[0]
        results.append(compare(f"image[batch={n}]", ref, got, atol, rtol, peak=peak))
    return results


def refuse_point_model(path, info: CheckpointInfo) -> None:
    raise ExportError(f"{str(path)!r} is a 2-D point model ({info.kind} on {info.data}); export writes image "
                      "generators only: sample it with `latentforge sample CKPT -o pts.npy`")


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                atol: float = 1e-4, rtol: float = 1e-3) -> ExportResult:
    """Export a checkpoint's decoder to `out`; raise ParityError (writing nothing) if onnxruntime disagrees."""
    out = check_output_path(out)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"output must end in .onnx (load() tells formats by suffix), got {str(out)!r}")
    if not 14 <= opset <= 23:
        raise InputError(f"opset must be in 14..23, got {opset}")
    if not (math.isfinite(atol) and math.isfinite(rtol)) or atol < 0 or rtol < 0:
        raise InputError(f"tolerances must be >= 0, got atol={atol}, rtol={rtol}")
    model, info = load_checkpoint(checkpoint)
    if info.config.get("point_dim"):
        refuse_point_model(checkpoint, info)
    meta = metadata(info)
    data = to_onnx_bytes(model, info.config["latent_dim"], meta, opset)
    parity = check_parity(model, data, info.config["latent_dim"], info.value_range, atol, rtol)
    result = ExportResult(None, parity, meta)
    if not result.passed:
        raise ParityError("onnxruntime disagrees with PyTorch; nothing written to "
                          f"{str(out)!r}: " + "; ".join(p.line() for p in parity if not p.passed), result)
    atomic_write_bytes(out, data)
    result.path = out
    return result
