"""latentforge's codec: `compress(model, images) -> bytes` and `decompress(data, model) -> images`.

A loaded model that can compress carries `codec_points` and a `codec_factory(point)` (set by
runtime/loading.py for checkpoints) that builds an operating point on first use. Points (the header's byte 4):

| point | model | what is coded |
|---|---|---|
| 1 `vq` | a VQ-VAE prior checkpoint | the code grid under the prior (runtime/codec_vq.py) |
| 2-6 `vae-q1`..`vae-q5` | a VAE with NAME.codec.safetensors beside it | the quantized mean latent (codec_latent.py) |

The shipped "faces" codec is a quality ladder over shipped models (SHIPPED): 1-5 the faces VAE's latent
points, 6 the VQ prior. The stream format is latentforge/lfz.py. Decompression checks the stream whole before
decoding anything, then the decoded symbols against the CRC the encoder stored.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentforge import lfz
from latentforge.errors import BackendUnavailable, InputError, StreamError

from .codec_vq import codes_crc

POINTS = {1: "vq", **{1 + q: f"vae-q{q}" for q in range(1, 6)}}
# quality -> (shipped model file in latentforge/weights, operating point)
SHIPPED = {1: ("faces_vae.safetensors", 2), 2: ("faces_vae.safetensors", 3), 3: ("faces_vae.safetensors", 4),
           4: ("faces_vae.safetensors", 5), 5: ("faces_vae.safetensors", 6), 6: ("faces_vq.safetensors", 1)}
DEFAULT_QUALITY = 6


@dataclass
class Codec:
    point: int
    fingerprint: bytes
    coder: object                                   # encode(symbols) -> words, decode(words, n) -> symbols
    analyse: Callable[[np.ndarray], np.ndarray]     # uint8 images -> symbols (int64 [N, ...])
    synthesize: Callable[[np.ndarray], np.ndarray]  # symbols -> uint8 images


def file_fingerprint(path: Path, prefixes: tuple[str, ...], extra: dict | None = None) -> bytes:
    """lfz.fingerprint of a checkpoint's tensors whose names start with `prefixes` (what decoding uses)."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefixes)}  # noqa: SIM118 (a method)
    return lfz.fingerprint(tensors | (extra or {}))


def vq_codec(model, module, threads: int | None) -> Codec:
    """The VQ point of a loaded prior checkpoint: its step run in float64 on the model's backend (torch, or
    onnxruntime over the float64 step graph)."""
    import torch

    from latentforge.models.prior import exact_step

    from .codec_vq import VQPoint
    from .torch_backend import thread_count

    if model.backend not in ("torch", "onnxruntime"):   # OpenVINO computes in float32 whatever the graph says
        raise BackendUnavailable(f"the codec's float64 prior runs on torch or onnxruntime, not {model.backend}; "
                                 "load the model with backend='onnxruntime' or 'torch' to compress or decompress")
    step = exact_step(module.transformer)
    cache_shape = tuple(step.empty_cache(1).shape[1:])
    if model.backend == "torch":
        def make_run():
            def run(token, position, cache):
                with thread_count(threads), torch.inference_mode():
                    logits, kv = step(torch.from_numpy(token), torch.from_numpy(position), torch.from_numpy(cache))
                return logits.numpy(), kv.numpy()
            return run
    else:
        from latentforge.export.codec import exact_step_graph

        from .graphs import open_graph

        graph = open_graph(model.backend, exact_step_graph(step), threads, "the codec's float64 prior step graph")

        def make_run():
            return lambda token, position, cache: graph.run({"token": token, "position": position, "cache": cache})
    fp = file_fingerprint(model.path, ("transformer.", "vqvae.decoder.", "vqvae.quantizer.codebook"))
    coder = VQPoint(make_run, cache_shape, model.codebook_size, model.code_grid)
    return Codec(1, fp, coder, model.encode, model.decode_codes)


def latent_codec(model, point: int) -> Codec:
    """A VAE's latent point `point` (2-6: quality 1-5) from the tables beside its checkpoint."""
    from .codec_latent import LatentPoint, read_tables, tables_path

    tables = read_tables(tables_path(model.path))
    quality = point - 1
    if quality not in tables:
        raise InputError(f"{str(model.path)!r} has codec tables for qualities {sorted(tables)}, not {quality}")
    step, freq = tables[quality]
    if freq.shape[0] != model.latent_dim:
        raise InputError(f"codec tables of {freq.shape[0]} dimensions do not fit a VAE of {model.latent_dim}")
    coder = LatentPoint(step, freq)
    fp = file_fingerprint(model.path, ("decoder.",), {"freq": freq, "step": np.array([step])})
    return Codec(point, fp, coder, lambda images: coder.quantize(model.encode(images)[0]),
                 lambda symbols: model.decode(coder.latents(symbols)))


def codec_of(model, point: int | None = None) -> Codec:
    """The model's codec at `point` (None: its first), built once and kept on the model."""
    points = getattr(model, "codec_points", ())
    if not points:
        raise InputError(f"{model!r} cannot compress: the codec needs a VQ prior checkpoint, or a VAE checkpoint "
                         "with codec tables beside it (e.g. latentforge/weights/faces_vq.safetensors)")
    point = points[0] if point is None else point
    if point not in points:
        raise StreamError(f"the stream was coded at operating point {POINTS.get(point, point)!r}, and this model "
                          f"codes {[POINTS[p] for p in points]}; decompress it with the model that wrote it")
    cache = model.__dict__.setdefault("codecs", {})
    if point not in cache:
        cache[point] = model.codec_factory(point)
    return cache[point]


def compress(model, images, quality: int | None = None, point: int | None = None) -> bytes:
    """uint8 images [N, H, W, C] -> the bytes of a .lfz stream, at the model's `quality` (1 = its lowest rate;
    None: its first operating point) or at operating `point` (load_codec_model's)."""
    points = sorted(getattr(model, "codec_points", ()))
    if quality is not None and points and not (isinstance(quality, int) and 1 <= quality <= len(points)):
        raise InputError(f"quality must be an integer in 1..{len(points)} for this model, got {quality!r}")
    codec = codec_of(model, points[quality - 1] if quality is not None else point)
    symbols = codec.analyse(images)
    n = len(symbols)
    words = codec.coder.encode(symbols)
    if len(words) * 32 < n:   # at least one bit an image, so a header's count bounds a decoder's work
        words = np.concatenate([words, np.zeros(n // 32 + 1 - len(words), dtype=np.uint32)])
    header = lfz.Header(codec.point, codec.fingerprint, n, tuple(model.image_shape), codes_crc(symbols))
    return lfz.pack(header, words.astype("<u4").tobytes())


def _decode(data, model) -> tuple[Codec, np.ndarray]:
    header, payload = lfz.unpack(data)
    codec = codec_of(model, header.point)
    if header.fingerprint != codec.fingerprint:
        raise StreamError(f"the stream was written by model {header.fingerprint.hex()}, and this is model "
                          f"{codec.fingerprint.hex()}; decompress it with the model that compressed it")
    if header.shape != tuple(model.image_shape):
        raise StreamError(f"the stream holds {header.shape} images, and this model makes {model.image_shape} "
                          "(corrupted stream)")
    if header.count > 8 * len(payload):
        raise StreamError(f"the stream says {header.count} images in a payload of {len(payload)} bytes, fewer "
                          "than a bit an image (corrupted stream)")
    symbols = codec.coder.decode(np.frombuffer(payload, dtype="<u4").astype(np.uint32), header.count)
    if codes_crc(symbols) != header.codes_crc:
        raise StreamError("the decoded codes fail the stream's code CRC: the prior here disagreed with the "
                          "encoder's, or the stream is corrupted; decompress with the same model file")
    return codec, symbols


def decompress_symbols(data, model) -> np.ndarray:
    """The coded symbols (VQ code grids, quantized latents) of a .lfz stream; StreamError for any stream `model`
    did not write."""
    return _decode(data, model)[1]


def decompress(data, model) -> np.ndarray:
    """uint8 images [N, H, W, C] of a .lfz stream: the model's own reconstruction of what was compressed."""
    codec, symbols = _decode(data, model)
    return codec.synthesize(symbols)
