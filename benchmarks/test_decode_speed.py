"""Decode speed of a default-size 64px ConvVAE (random weights) on each engine, batch 1 and 16.

    pytest benchmarks/ --benchmark-only

prints one comparison table per batch size. The engines are the ones `latentforge bench`
compares (see latentforge.runtime.engines); torch.compile is left out here because its ~20 s
compile would dominate the suite. Timed: z in -> float32 image out, inputs preallocated.
"""
import pytest
import torch

from latentforge.checkpoint import save_checkpoint
from latentforge.latents import latents
from latentforge.models import ConvVAE, VAEConfig
from latentforge.runtime.engines import COMPILE, ENGINES, make_engines

CONFIG = VAEConfig()  # 64 px RGB, 32-d latents, base 32 channels


@pytest.fixture(scope="session")
def engines(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench") / "vae64.safetensors"
    save_checkpoint(path, ConvVAE(CONFIG).eval(), data="random", step=0)
    found, _, _ = make_engines(path, compile=False)
    return {engine.name: engine for engine in found}


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("name", [name for name in ENGINES if name != COMPILE])
def test_decode(benchmark, engines, name, batch):
    engine = engines[name]
    benchmark.group = f"decode 64px VAE, batch {batch}"
    benchmark.extra_info["threads"] = engine.threads
    benchmark(engine.run, engine.prepare(latents(batch, CONFIG.latent_dim, seed=0)))
