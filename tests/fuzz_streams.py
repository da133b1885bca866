"""The codec-stream fuzz target: `.lfz` streams of a tiny VQ prior, mutated byte-wise (with the stream's CRC32
made right again, so a mutation reaches the checks behind it) and decompressed in the worker subprocess as
`latentforge decompress` does, so a crash of the native range coder (constriction) is seen as a crash. Shared by
tests/test_fuzz.py and benchmarks/fuzz.py through tests/fuzz_targets.py (test_codec.py also fuzzes streams
in-process, and benchmarks/fuzz_codec.py at length)."""
from __future__ import annotations

import functools
from pathlib import Path

from hypothesis import strategies as st

from fuzz_formats import apply_bytes, byte_mutation

def write_codec_seeds(folder: Path, rng) -> None:
    """A tiny VQ prior (logits spread over several nats, as a trained one's) and streams of one and two images."""
    import numpy as np
    import torch

    import latentforge
    from latentforge.checkpoint import save_checkpoint
    from latentforge.models.prior import PriorConfig, VQPrior
    from latentforge.models.vqvae import VQVAEConfig

    torch.manual_seed(0)
    prior = VQPrior(PriorConfig(vqvae=VQVAEConfig(image_size=32, base_channels=8, codebook_size=16, code_dim=4,
                                                  downsample=3, res_blocks=1), width=16, layers=1, heads=2)).eval()
    with torch.no_grad():
        prior.transformer.head.weight.mul_(20)
    save_checkpoint(folder / "prior.safetensors", prior, data="faces", step=0)
    model = latentforge.load(folder / "prior.safetensors", backend="torch", threads=1)
    for name, n in (("one.lfz", 1), ("two.lfz", 2)):
        (folder / name).write_bytes(model.compress(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)))


codec_mutation = st.one_of(st.tuples(st.just("bytes"), byte_mutation), st.tuples(st.just("fix_crc")))


def _write_codec(seed: Path, case: Path, mutations: list) -> Path:
    import zlib

    data = seed.read_bytes()
    for op, *args in mutations:
        if op == "bytes":
            data = apply_bytes(data, args[0])
        elif len(data) > 4:
            data = data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "little")
    path = case / seed.name
    path.write_bytes(data)
    (case / "prior.safetensors").symlink_to(seed.with_name("prior.safetensors"))
    return path


@functools.cache
def _codec_model(path: Path):
    import latentforge

    return latentforge.load(path, backend="torch", threads=1)


def _load_codec(path: Path) -> str:
    """`latentforge decompress`'s work: the stream's images, by the model that wrote it (loaded once a worker)."""
    from latentforge.runtime.codec import decompress

    images = decompress(path.read_bytes(), _codec_model((path.parent / "prior.safetensors").resolve()))
    assert images.dtype.name == "uint8" and images.shape[1:] == (32, 32, 3), (images.dtype, images.shape)
    return f"{len(images)} images"


def codec_targets(Target) -> dict:
    return {"codec": Target(codec_mutation, _write_codec, ["one.lfz", "two.lfz"], load=_load_codec)}
