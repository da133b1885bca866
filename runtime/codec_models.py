"""Opening the model a codec stream needs: the shipped "faces" ladder by quality or by a stream's operating
point, or a checkpoint path (used by `latentforge compress/decompress`)."""

from __future__ import annotations

from pathlib import Path

from latentforge.errors import InputError, StreamError

from .codec import DEFAULT_QUALITY, SHIPPED
from .loading import load


def load_codec_model(model: str | None, backend: str = "auto", threads: int | None = None,
                     quality: int | None = None, point: int | None = None):
    """(loaded model, operating point): the shipped "faces" ladder at `quality`, or a checkpoint path; a stream's
    `point` with model None picks the shipped model that writes it."""
    import latentforge

    weights = Path(latentforge.__file__).parent / "weights"
    if model is None or model == "faces":
        if point is not None:
            quality = next((q for q, (_, p) in SHIPPED.items() if p == point), None)
            if quality is None:
                raise StreamError(f"the stream's operating point {point} has no shipped model; give --model CKPT")
        quality = DEFAULT_QUALITY if quality is None else quality
        if quality not in SHIPPED:
            raise InputError(f"--quality must be one of {sorted(SHIPPED)} for the shipped faces codec, got {quality}")
        path, point = weights / SHIPPED[quality][0], SHIPPED[quality][1]
    else:
        path = Path(model)
    loaded = load(path, backend=backend, threads=threads)
    points = getattr(loaded, "codec_points", ())
    if not points:
        raise InputError(f"{str(path)!r} is a {loaded.kind} model without a codec: give a VQ prior checkpoint, a "
                         "VAE with NAME.codec.safetensors beside it, or 'faces'")
    if point is None and quality is not None:
        if not 1 <= quality <= len(points):
            raise InputError(f"--quality must be in 1..{len(points)} for {str(path)!r}, got {quality}")
        point = sorted(points)[quality - 1]
    return loaded, point
