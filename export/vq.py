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
import os

import numpy as np
import torch

from latentforge.checkpoint import load_checkpoint
from latentforge.errors import ExportError, InputError
from latentforge.files import atomic_write_bytes, check_output_path
from latentforge.models.prior import PriorStep

from .graph import DEFAULT_OPSET, Decode, Part, checked_graph, metadata
from .source import source_of

IN_MEMORY_BATCHES = (1, 8)  # vq_graphs runs while the runtime loads a checkpoint: smaller than the exporter's


def vqvae_fingerprint(vqvae: torch.nn.Module) -> str:
    """sha256 of a VQ-VAE's tensors (names, dtypes, shapes, values): the same on a prior's copy and on the original,
    so a runtime can refuse a prior graph paired with another VQ-VAE's decoder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vqvae.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _vqvae(source) -> torch.nn.Module:
    return source.model.vqvae if source.kind == "prior" else source.model


def vq_metadata(source, part: str) -> dict[str, str]:
    """metadata_props of a VQ graph, precision aside; `part` is "vq_decoder" or "prior"."""
    info = source.info
    vq = info.config["vqvae"] if info.kind == "prior" else info.config
    grid = vq["image_size"] >> vq["downsample"]
    facts = {"codebook_size": str(vq["codebook_size"]), "vqvae_sha256": vqvae_fingerprint(_vqvae(source)),
             "code_grid": json.dumps([grid, grid])}
    if part == "prior":   # the step graph's cache [N, layers, 2, heads, T, d], less the batch
        cfg = info.config
        facts["prior_cache"] = json.dumps([cfg["layers"], 2, cfg["heads"], grid * grid, cfg["width"] // cfg["heads"]])
    return metadata(info.kind, part, source.image_shape, info.value_range, info.data, **facts)


def decoder_part(source) -> Part:
    """`latentforge export VQ_CKPT --part decoder`: codes int64 [N, h, w] -> image."""
    vqvae = _vqvae(source)
    cfg = vqvae.config
    lo, hi = cfg.value_range

    def make(n, seed):
        rng = np.random.default_rng(seed)
        return {"codes": rng.integers(0, cfg.codebook_size, (n, cfg.grid_size, cfg.grid_size), dtype=np.int64)}

    return Part("decoder", Decode(vqvae), make, ["image"], {"image": hi - lo}, vq_metadata(source, "vq_decoder"))


def step_inputs(step: PriorStep, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fresh random inputs of the prior's step graph: any token, any position, any cache contents."""
    k = step.transformer.head.out_features
    length = step.transformer.position.shape[0]
    cache = rng.standard_normal(tuple(step.empty_cache(n).shape)).astype(np.float32)
    return {"token": rng.integers(0, k + 1, n, dtype=np.int64),
            "position": np.array([rng.integers(0, length)], dtype=np.int64), "cache": cache}


class PriorPart(Part):
    """The key/value-cache step: checked also at the first and the last position, where off-by-ones live."""

    def parity_cases(self, batches):
        cases = []
        for n, position in [*((n, None) for n in batches), (batches[0], 0),
                            (batches[-1], self.module.transformer.position.shape[0] - 1)]:
            feeds = self.make_inputs(n, None)
            if position is not None:
                feeds["position"] = np.array([position], dtype=np.int64)
            cases.append((f"batch={n}, position={int(feeds['position'][0])}", feeds))
        return cases

    def golden_feed(self, seed: int) -> dict[str, np.ndarray]:
        """At position 0 with an empty cache: every weight of the step still runs, and the cache, by far the largest
        input (random, it would be a megabyte of metadata), is zeros, which compress to a few bytes."""
        feeds = self.make_inputs(1, seed)
        feeds["cache"] = np.zeros_like(feeds["cache"])
        feeds["position"] = np.array([0], dtype=np.int64)
        return feeds


def prior_part(source) -> Part:
    """`latentforge export PRIOR_CKPT --part prior`: the sampling step graph (token, position, cache) -> (logits,
    kv)."""
    if source.kind != "prior":
        raise ExportError(f"--part prior needs a prior checkpoint, and this is a {source.kind}; "
                          "train one with `latentforge train prior VQ_CKPT`")
    step = PriorStep(source.model.transformer)

    def make(n, seed):
        return step_inputs(step, n, np.random.default_rng(seed))

    # PSNR of logits against a 20-nat span: errors in units that move sampling probabilities; of keys and
    # values against a +-4 span.
    return PriorPart("prior", step, make, ["logits", "kv"], {"logits": 20.0, "kv": 8.0}, vq_metadata(source, "prior"),
                     fixed=("position",))


def vq_graphs(model, info, opset: int = DEFAULT_OPSET) -> dict[str, bytes]:
    """{"decoder": bytes} for a vqvae, plus {"prior": bytes} for a prior; every graph parity-checked."""
    source = source_of(model, info)
    graphs = {"decoder": checked_graph(decoder_part(source), "the VQ decoder graph", opset, batches=IN_MEMORY_BATCHES)}
    if info.kind == "prior":
        graphs["prior"] = checked_graph(prior_part(source), "the prior graph", opset, batches=IN_MEMORY_BATCHES)
    return graphs


def export_vq(checkpoint: str | os.PathLike, decoder_out: str | os.PathLike,
              prior_out: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET) -> dict[str, str]:
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
