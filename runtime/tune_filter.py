"""Tuning the real-time filter (runtime/filter.py): which engine runs a checkpoint's filter graph fastest here.

A VAE's filter step (frame -> encode -> edit -> decode -> frame, one graph: runtime/filter_graph.py) is a different
shape of work than a batch of decodes: one uint8 frame, twice the convolutions. `tune` times it on its own, at
one frame per call, on onnxruntime (default session, one intra-op thread, no spinning) and OpenVINO (f32, its
bf16 hint where the CPU has bf16 units, and int8 by NNCF calibrated on random frames: on the default-trained
64 px VAE 1.56 against onnxruntime's 2.10 ms, 50 dB, on a busy AVX-512-VNNI EPYC). Each is first gated on the PSNR of its uint8 frames against onnxruntime's
fp32 default session, on fresh random frames; the record keeps the fastest as `filter`, and the exported graph
beside itself so `Filter(load(ckpt))` neither exports nor guesses.
"""
from __future__ import annotations

import numpy as np

from latentforge.errors import LatentforgeError
from latentforge.latents import latents

from .backends import ORT_MODES
from .graphs import open_graph
from .machine import Hardware, installed
from .tune_record import Winner
from .tune_timing import Candidate, pick, psnr_db, time_side_by_side

GATE_FRAMES = 4


def filter_feeds(n: int, image_shape: tuple[int, int, int], latent_dim: int, seed: int | None = None) -> dict:
    frames = np.random.default_rng(seed).integers(0, 256, (n, *image_shape), dtype=np.uint8)
    return {"frame": frames, "offset": latents(n, latent_dim, seed), "temperature": np.zeros(1, np.float32),
            "eps": np.zeros((n, latent_dim), np.float32)}


def tune_filter(model, facts: Hardware, threads: int | None, min_psnr: float, seconds: float,
                rejected: dict[str, str], scratch=None) -> tuple[Winner | None, dict[str, float], bytes | None, object]:
    """(the fastest filter engine that passed the gate, {label: p50 ms}, the graph, the int8 IR's .xml in
    `scratch` or None) for a checkpoint `model` that encodes; (None, {}, None, None) for one that does not."""

    if not model.has_encoder:
        return None, {}, None, None
    from latentforge.checkpoint import read_info

    from .filter_graph import filter_graph_bytes

    graph = filter_graph_bytes(model._encoder.module, read_info(model.path))
    setups = [("onnxruntime", "fp32", "fused")] + [("onnxruntime", "fp32", m) for m in ORT_MODES]
    if installed("openvino"):
        setups += [("openvino", "fp32", "fused")] + ([("openvino", "bf16", "fused")] if facts.bf16_units else [])
    found = []
    for backend, precision, mode in setups:
        label = "filter " + Winner(backend, precision, 0, 0, mode).label
        if backend == "onnxruntime" and not installed("onnxruntime"):
            continue
        try:
            opened = open_graph(backend, graph, threads, "the filter graph", precision, mode)
        except LatentforgeError as e:
            rejected[label] = str(e)
            continue
        if opened.precision != precision:
            rejected[label] = f"OpenVINO compiled {opened.precision} for the {precision} hint"
            continue
        found.append(Candidate(backend, precision, lambda feeds, g=opened: g.run(feeds)[0], mode))
    int8 = None
    if scratch is not None and installed("openvino") and installed("nncf"):
        from .openvino_backend import OvGraph
        from .ov_int8 import quantize

        try:
            calibration = [filter_feeds(4, model.image_shape, model.latent_dim, seed=2000 + i) for i in range(8)]
            int8 = quantize(graph, model.latent_dim, scratch, calibration, "filter-int8")
            opened = OvGraph(int8, threads, "the filter graph quantized by NNCF", "int8")
            found.append(Candidate("openvino", "int8", lambda feeds, g=opened: g.run(feeds)[0], "nncf"))
        except LatentforgeError as e:
            rejected["filter openvino int8 nncf"] = str(e)
    if not found:
        return None, {}, graph, None
    feeds = filter_feeds(GATE_FRAMES, model.image_shape, model.latent_dim)
    expected = found[0].run(feeds).astype(np.float64)   # onnxruntime's default session, fp32
    passed = {}
    for candidate in list(found):
        value = psnr_db(candidate.run(feeds).astype(np.float64), expected, 255.0)
        if value < min_psnr:
            rejected["filter " + candidate.label] = f"PSNR {value:.1f} dB against fp32 < {min_psnr:g} dB"
            found.remove(candidate)
        else:
            passed[candidate.label] = value
    timings = time_side_by_side(found, filter_feeds(1, model.image_shape, model.latent_dim, seed=0), seconds)
    label = pick(timings)
    best = next(c for c in found if c.label == label)
    return (Winner(best.backend, best.precision, timings[label], passed[label], best.mode), timings, graph,
            int8 if best.mode == "nncf" else None)
