"""latentforge's codec: `compress(model, images) -> bytes` and `decompress(data, model) -> images`.

A loaded model that can compress carries a `codec_factory` (set by runtime/loading.py for checkpoints) that
builds its operating point on first use. Operating points (the header's byte 4):

| point | model | what is coded |
|---|---|---|
| 1 `vq` | a VQ-VAE prior checkpoint | the code grid under the prior (runtime/codec_vq.py) |

The stream format is latentforge/lfz.py. Decompression checks the stream whole before decoding anything,
then checks the decoded codes against the CRC the encoder stored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latentforge import lfz
from latentforge.errors import InputError, StreamError

from .codec_vq import VQPoint, codes_crc

POINTS = {1: "vq"}
SHIPPED = {"faces-vq": "faces_vq.safetensors"}   # in latentforge/weights/
SHIPPED_BY_POINT = {1: "faces-vq"}


@dataclass
class Codec:
    point: int
    fingerprint: bytes
    coder: VQPoint


def vq_codec(module, backend: str, threads: int | None) -> Codec:
    """The VQ operating point of a prior checkpoint's modules, its step run in float64 on `backend` (torch, or
    onnxruntime / openvino over the float64 step graph)."""
    import torch
    from latentforge.models.prior import exact_step

    from .torch_backend import thread_count

    step = exact_step(module.transformer)
    cache_shape = tuple(step.empty_cache(1).shape[1:])
    if backend == "torch":
        def make_run():
            def run(token, position, cache):
                with thread_count(threads), torch.inference_mode():
                    logits, kv = step(torch.from_numpy(token), torch.from_numpy(position), torch.from_numpy(cache))
                return logits.numpy(), kv.numpy()
            return run
    else:
        from latentforge.export.codec import exact_step_graph

        from .graphs import open_graph

        graph = open_graph(backend, exact_step_graph(step), threads, "the codec's float64 prior step graph")

        def make_run():
            return lambda token, position, cache: graph.run({"token": token, "position": position, "cache": cache})
    cfg = module.config.vq
    tensors = {f"transformer.{k}": v.detach().numpy() for k, v in module.transformer.state_dict().items()}
    tensors |= {f"decoder.{k}": v.detach().numpy() for k, v in module.vqvae.decoder.state_dict().items()}
    tensors["codebook"] = module.vqvae.quantizer.codebook.detach().numpy()
    return Codec(1, lfz.fingerprint(tensors), VQPoint(make_run, cache_shape, cfg.codebook_size, cfg.grid_size))


def load_codec_model(model: str | None, backend: str = "auto", threads: int | None = None,
                     quality: int | None = None, point: int | None = None):
    """A loaded model that compresses: a shipped name ("faces-vq") or a prior checkpoint path; None with a
    stream's `point` gives that point's shipped model."""
    from pathlib import Path

    from latentforge.runtime.loading import load

    if model is None:
        if point not in SHIPPED_BY_POINT:
            raise StreamError(f"the stream's operating point {point} has no shipped model; give --model CKPT")
        model = SHIPPED_BY_POINT[point]
    if quality is not None and quality != 1:
        raise InputError(f"--quality must be 1 (this codec has one operating point: {POINTS[1]!r}), got {quality}")
    if model in SHIPPED:
        import latentforge

        path = Path(latentforge.__file__).parent / "weights" / SHIPPED[model]
    else:
        path = Path(model)
    loaded = load(path, backend=backend, threads=threads)
    if getattr(loaded, "codec_factory", None) is None:
        raise InputError(f"{model!r} is a {loaded.kind} model, which cannot compress; give a VQ prior checkpoint "
                         f"(one of {sorted(SHIPPED)} or a `latentforge train prior` result)")
    return loaded


def _codec_of(model) -> Codec:
    codec = getattr(model, "codec", None)
    if codec is None:
        factory = getattr(model, "codec_factory", None)
        if factory is None:
            raise InputError(f"{model!r} cannot compress: the codec needs a VQ prior checkpoint (.safetensors), "
                             "e.g. latentforge.load('faces-vq') or a prior trained with `latentforge train prior`")
        codec = model.codec = factory()
    return codec


def compress(model, images) -> bytes:
    """uint8 images [N, H, W, C] -> the bytes of a .lfz stream."""
    codec = _codec_of(model)
    codes = model.encode(images)
    n = len(codes)
    words = codec.coder.encode(codes)
    if len(words) * 32 < n:   # at least one bit an image, so a header's count bounds a decoder's work
        words = np.concatenate([words, np.zeros(n // 32 + 1 - len(words), dtype=np.uint32)])
    header = lfz.Header(codec.point, codec.fingerprint, n, tuple(model.image_shape), codes_crc(codes))
    return lfz.pack(header, words.astype("<u4").tobytes())


def decompress_codes(data, model) -> np.ndarray:
    """The code grids int64 [N, h, w] of a .lfz stream; StreamError for any stream `model` did not write."""
    header, payload = lfz.unpack(data)
    codec = _codec_of(model)
    if header.point != codec.point:
        raise StreamError(f"the stream was coded at operating point {POINTS.get(header.point, header.point)!r}, "
                          f"and this model codes {POINTS[codec.point]!r}; decompress it with the model that wrote it")
    if header.fingerprint != codec.fingerprint:
        raise StreamError(f"the stream was written by model {header.fingerprint.hex()}, and this is model "
                          f"{codec.fingerprint.hex()}; decompress it with the model that compressed it")
    if header.shape != tuple(model.image_shape):
        raise StreamError(f"the stream holds {header.shape} images, and this model makes {model.image_shape} "
                          "(corrupted stream)")
    if header.count > 8 * len(payload):
        raise StreamError(f"the stream says {header.count} images in a payload of {len(payload)} bytes, fewer "
                          "than a bit an image (corrupted stream)")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    codes = codec.coder.decode(words, header.count)
    if codes_crc(codes) != header.codes_crc:
        raise StreamError("the decoded codes fail the stream's code CRC: the prior here disagreed with the "
                          "encoder's, or the stream is corrupted; decompress with the same model file")
    return codes


def decompress(data, model) -> np.ndarray:
    """uint8 images [N, H, W, C] of a .lfz stream: the model's own reconstruction of what was compressed."""
    return model.decode_codes(decompress_codes(data, model))


def reconstruct(model, images) -> np.ndarray:
    """What decompress(compress(images)) gives, without the entropy coding: the model's own reconstruction."""
    return model.decode_codes(model.encode(images))
