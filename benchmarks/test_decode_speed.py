"""Decode speed of the shipped 64px faces VAE on each engine, batch 1 and 16.

    pytest benchmarks/ --benchmark-only

prints one comparison table per batch size. The engines are the ones `latentforge bench`
compares (see latentforge.runtime.engines); torch.compile is left out here because its ~20 s
compile would dominate the suite. Timed: z in -> float32 image out, inputs preallocated.
"""
import pytest

from latentforge.checkpoint import read_info
from latentforge.demo import SHIPPED
from latentforge.latents import latents
from latentforge.runtime.engines import COMPILE, ENGINES, make_engines

LATENT_DIM = read_info(SHIPPED).config["latent_dim"]


@pytest.fixture(scope="session")
def engines():
    found, _, _ = make_engines(SHIPPED, compile=False)
    return {engine.name: engine for engine in found}


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("name", [name for name in ENGINES if name != COMPILE])
def test_decode(benchmark, engines, name, batch):
    if name not in engines:   # the bf16 peers exist only on CPUs with bf16 units
        pytest.skip(f"{name} does not run on this machine (see `latentforge bench`)")
    engine = engines[name]
    benchmark.group = f"decode 64px VAE, batch {batch}"
    benchmark.extra_info["threads"] = engine.threads
    benchmark(engine.run, engine.prepare(latents(batch, LATENT_DIM, seed=0)))
