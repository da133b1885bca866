"""The VQ parts as ONNX graphs, each checked against PyTorch on fresh random inputs before it is returned.

- VQ decoder: `codes` int64 [N, h, w] -> `image` float32 [N, C, H, W] in the model's value range.
- Prior: one sampling step over a fixed-size key/value cache (models.prior.PriorStep): `token` int64 [N]
  (the start token K at position 0), `position` int64 [1], `cache` float32 [N, layers, 2, heads, T, d]
  -> `logits` float32 [N, K] for the next code and `kv` [N, layers, 2, heads, d], this position's keys
  and values, which the sampling loop (NumPy, seeded PCG64, latentforge.runtime.vq_sampling) writes
  into its cache. Static shapes but for the batch. Recomputing the prefix each step instead cost 2.6 s an
  image at a 16x16 grid (256 codes) on this CPU. (The runtime loads VQ graphs on onnxruntime and OpenVINO;
  VQ TensorRT engines can be built by the exporter but the runtime does not load them yet.)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings

import numpy as np
import torch

from latentforge import __version__
from latentforge.checkpoint import PREFIX as META
from latentforge.checkpoint import load_checkpoint
from latentforge.errors import ExportError, InputError, ParityError
from latentforge.files import atomic_write_bytes, check_output_path
from latentforge.models.prior import PriorStep

from .onnx import DEFAULT_OPSET
from .parity import OutputParity, compare

PARITY_BATCHES = (1, 8)


class _CodesToImage(torch.nn.Module):
    def __init__(self, vqvae: torch.nn.Module) -> None:
        super().__init__()
        self.vqvae = vqvae

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vqvae.decode(codes)


def vqvae_fingerprint(vqvae: torch.nn.Module) -> str:
    """sha256 of a VQ-VAE's tensors (names, dtypes, shapes, values): the same on a prior's copy and on the original,
    so a runtime can refuse a prior graph paired with another VQ-VAE's decoder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vqvae.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def vq_metadata(info, part: str, vqvae: torch.nn.Module) -> dict[str, str]:
    """metadata_props of a VQ graph; `info` is the checkpoint's (a vqvae or a prior), `vqvae` its VQ-VAE."""
    vq = info.config["vqvae"] if info.kind == "prior" else info.config
    grid = vq["image_size"] >> vq["downsample"]
    meta = {"version": __version__, "kind": info.kind, "part": part, "codebook_size": str(vq["codebook_size"]),
            "vqvae_sha256": vqvae_fingerprint(vqvae),
            "code_grid": json.dumps([grid, grid]), "image_shape": json.dumps([vq["channels"], vq["image_size"],
                                                                              vq["image_size"]]),
            "value_range": json.dumps(list(info.value_range)), "data": info.data}
    if part == "prior":   # the step graph's cache [N, layers, 2, heads, T, d], less the batch
        cfg = info.config
        meta["prior_cache"] = json.dumps([cfg["layers"], 2, cfg["heads"], grid * grid, cfg["width"] // cfg["heads"]])
    return {META + k: v for k, v in meta.items()}


def _export(module: torch.nn.Module, examples: dict[str, torch.Tensor], outputs: list[str], dynamic: dict,
            meta: dict[str, str], opset: int) -> bytes:
    import onnx

    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(module.eval(), tuple(examples.values()), dynamo=True,
                                        input_names=list(examples), output_names=outputs,
                                        dynamic_shapes=dynamic, opset_version=opset, verbose=False)
        except Exception as e:
            raise ExportError(f"torch.onnx could not export the {meta.get(META + 'part')} at opset {opset}: "
                              f"{str(e).splitlines()[0]}") from e
        finally:
            onnx_logger.setLevel(level)
    proto = program.model_proto
    proto.producer_name, proto.producer_version = "latentforge", __version__
    for key, value in sorted(meta.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def vq_decoder_onnx(vqvae, meta: dict[str, str], opset: int = DEFAULT_OPSET) -> bytes:
    grid = vqvae.config.grid_size
    example = {"codes": torch.zeros(2, grid, grid, dtype=torch.int64)}
    return _export(_CodesToImage(vqvae), example, ["image"], {"codes": {0: torch.export.Dim("batch")}}, meta, opset)


def step_inputs(step: PriorStep, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fresh random inputs of the prior's step graph: any token, any position, any cache contents."""
    k = step.transformer.head.out_features
    length = step.transformer.position.shape[0]
    cache = rng.standard_normal(tuple(step.empty_cache(n).shape)).astype(np.float32)
    return {"token": rng.integers(0, k + 1, n, dtype=np.int64),
            "position": np.array([rng.integers(0, length)], dtype=np.int64), "cache": cache}


def prior_onnx(transformer, meta: dict[str, str], opset: int = DEFAULT_OPSET) -> bytes:
    step = PriorStep(transformer)
    example = {name: torch.from_numpy(v) for name, v in step_inputs(step, 2, np.random.default_rng(0)).items()}
    batch = torch.export.Dim("batch")
    dynamic = {"token": {0: batch}, "position": None, "cache": {0: batch}}
    return _export(step, example, ["logits", "kv"], dynamic, meta, opset)


def _session(data: bytes):
    import onnxruntime as ort

    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def check_vq_decoder(vqvae, data: bytes, atol: float = 1e-4, rtol: float = 1e-3) -> list[OutputParity]:
    """onnxruntime vs torch on fresh random code grids."""
    session, rng = _session(data), np.random.default_rng()
    cfg = vqvae.config
    results = []
    for n in PARITY_BATCHES:
        codes = rng.integers(0, cfg.codebook_size, (n, cfg.grid_size, cfg.grid_size), dtype=np.int64)
        with torch.inference_mode():
            ref = vqvae.decode(torch.from_numpy(codes)).numpy()
        got = session.run(["image"], {"codes": codes})[0]
        lo, hi = cfg.value_range
        results.append(compare(f"image[batch={n}]", ref, got, atol, rtol, peak=hi - lo))
    return results


def check_prior(transformer, data: bytes, atol: float = 1e-3, rtol: float = 1e-3) -> list[OutputParity]:
    """onnxruntime vs torch on the step graph, on fresh random tokens, positions (the first and last among them)
    and cache contents."""
    step, session, rng = PriorStep(transformer).eval(), _session(data), np.random.default_rng()
    length = transformer.position.shape[0]
    results = []
    for n, position in ((1, 0), (PARITY_BATCHES[-1], None), (PARITY_BATCHES[-1], length - 1)):
        feeds = step_inputs(step, n, rng)
        if position is not None:
            feeds["position"] = np.array([position], dtype=np.int64)
        with torch.inference_mode():
            ref = [t.numpy() for t in step(**{k: torch.from_numpy(v) for k, v in feeds.items()})]
        got = session.run(["logits", "kv"], feeds)
        where = f"batch={n}, position={int(feeds['position'][0])}"
        results += [compare(f"logits[{where}]", ref[0], got[0], atol, rtol),
                    compare(f"kv[{where}]", ref[1], got[1], atol, rtol)]
    return results


def _checked(name: str, data: bytes, parity: list[OutputParity]) -> bytes:
    failed = [p for p in parity if not p.passed]
    if failed:
        raise ParityError(f"the {name} graph disagrees with PyTorch: " + "; ".join(p.line() for p in failed))
    return data


def vq_graphs(model, info, opset: int = DEFAULT_OPSET) -> dict[str, bytes]:
    """{"decoder": bytes} for a vqvae, plus {"prior": bytes} for a prior; every graph parity-checked."""
    vqvae = model.vqvae if info.kind == "prior" else model
    graphs = {"decoder": vq_decoder_onnx(vqvae, vq_metadata(info, "vq_decoder", vqvae), opset)}
    _checked("VQ decoder", graphs["decoder"], check_vq_decoder(vqvae, graphs["decoder"]))
    if info.kind == "prior":
        graphs["prior"] = prior_onnx(model.transformer, vq_metadata(info, "prior", vqvae), opset)
        _checked("prior", graphs["prior"], check_prior(model.transformer, graphs["prior"]))
    return graphs


def export_vq(checkpoint: str | os.PathLike, decoder_out: str | os.PathLike, prior_out: str | os.PathLike | None = None,
              opset: int = DEFAULT_OPSET) -> dict[str, str]:
    """Write a VQ checkpoint's decoder (and, for a prior checkpoint, the prior) as .onnx files; nothing on failure."""
    model, info = load_checkpoint(checkpoint)
    if info.kind not in ("vqvae", "prior"):
        raise InputError(f"{checkpoint} is a {info.kind} checkpoint; export_vq takes a vqvae or prior checkpoint")
    targets = {"decoder": decoder_out} | ({"prior": prior_out} if prior_out is not None else {})
    if "prior" in targets and info.kind != "prior":
        raise InputError(f"{checkpoint} is a VQ-VAE without a prior; train one with `latentforge train prior`")
    paths = {part: check_output_path(p) for part, p in targets.items()}
    for part, path in paths.items():
        if path.suffix.lower() != ".onnx":
            raise InputError(f"{part} output must end in .onnx, got {str(path)!r}")
    graphs = vq_graphs(model, info, opset)
    for part, path in paths.items():
        atomic_write_bytes(path, graphs[part])
    return {part: str(path) for part, path in paths.items()}


def source_metadata(source, part: str, precision: str) -> dict[str, str]:
    """The metadata_props of a VQ checkpoint's exported part ("decoder" or "prior") at `precision`."""
    vqvae = source.model.vqvae if source.kind == "prior" else source.model
    name = "vq_decoder" if part == "decoder" else part
    return vq_metadata(source.info, name, vqvae) | {META + "precision": precision}


def _part_meta(source, part: str, meta: dict[str, str]) -> dict[str, str]:
    """VQ metadata in place of the latent-vector keys the pipeline drafts, keeping its precision."""
    return source_metadata(source, part, meta.get(META + "precision", "fp32"))


def decoder_part(source):
    """`latentforge export VQ_CKPT --part decoder`: codes int64 [N, h, w] -> image."""
    from .parts import Part

    vqvae = source.model.vqvae if source.kind == "prior" else source.model
    cfg = vqvae.config
    lo, hi = cfg.value_range

    def make(n, seed):
        rng = np.random.default_rng(seed)
        return {"codes": rng.integers(0, cfg.codebook_size, (n, cfg.grid_size, cfg.grid_size), dtype=np.int64)}

    return Part("decoder", _CodesToImage(vqvae), make, ["image"], {"image": hi - lo},
                onnx_bytes=lambda meta, opset: vq_decoder_onnx(vqvae, _part_meta(source, "decoder", meta),
                                                               opset))


def prior_part(source):
    """`latentforge export PRIOR_CKPT --part prior`: the sampling step graph (token, position, cache) -> (logits,
    kv)."""
    from .parts import Part

    if source.kind != "prior":
        raise ExportError(f"--part prior needs a prior checkpoint, and this is a {source.kind}; "
                          "train one with `latentforge train prior VQ_CKPT`")
    step = PriorStep(source.model.transformer)

    def make(n, seed):
        return step_inputs(step, n, np.random.default_rng(seed))

    # PSNR of logits against a 20-nat span: errors in units that move sampling probabilities; of keys and
    # values against a +-4 span.
    return Part("prior", step, make, ["logits", "kv"], {"logits": 20.0, "kv": 8.0}, fixed=("position",),
                onnx_bytes=lambda meta, opset: prior_onnx(source.model.transformer, _part_meta(source, "prior", meta),
                                                          opset))
