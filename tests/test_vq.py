"""VQ-VAE quantizer, code prior, their training, export parity and the runtime's sampling on both backends."""
from pathlib import Path

import numpy as np
import pytest
import torch

import latentforge
from latentforge.cli import main
from latentforge.errors import InputError
from latentforge.export.graph import ort_runner, validate
from latentforge.export.parts import build_part
from latentforge.export.source import source_of
from latentforge.export.vq import export_vq, vq_graphs
from latentforge.models import PriorConfig, VQPrior, VQVAEConfig
from latentforge.models.vqvae import Quantizer, usage
from latentforge.runtime.vq_sampling import next_code, sample_codes
from latentforge.training.train import TrainConfig, train

TINY_VQ = dict(base_channels=8, codebook_size=16, code_dim=4, downsample=3, res_blocks=1)


def test_straight_through_gradient_and_nearest_codes():
    q = Quantizer(8, 3, decay=0.99, dead_after=0.1).eval()
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    out, idx, commitment = q(z)
    torch.testing.assert_close(out, q.lookup(idx))          # the forward value is the nearest code...
    distance = torch.cdist(z.detach().permute(0, 2, 3, 1).reshape(-1, 3), q.codebook)
    assert torch.equal(idx.reshape(-1), distance.argmin(1))
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    torch.testing.assert_close(z.grad, weight)              # ...and the gradient passes straight through
    torch.testing.assert_close(commitment, (z - out).detach().square().flatten(1).sum(1))


def test_ema_update_moves_used_codes_to_their_running_mean():
    q = Quantizer(4, 2, decay=0.5, dead_after=0.0).train()
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]]))
    q.cluster_size.fill_(1.0)
    q.code_sum.copy_(q.codebook)
    z = torch.tensor([[1.0, 2.0], [3.0, 0.0]]).t().reshape(1, 2, 1, 2)  # two vectors, both nearest to code 0
    q(z)
    # cluster 0: 0.5 * 1 + 0.5 * 2 = 1.5; sum: 0.5 * 0 + 0.5 * (1+3, 2+0) = (2, 1); others decay to 0.5
    torch.testing.assert_close(q.cluster_size, torch.tensor([1.5, 0.5, 0.5, 0.5]))
    torch.testing.assert_close(q.code_sum[0], torch.tensor([2.0, 1.0]))
    total = q.cluster_size.sum()
    smoothed = (q.cluster_size + 1e-5) / (total + 4e-5) * total
    torch.testing.assert_close(q.codebook, q.code_sum / smoothed[:, None])
    q.eval()
    before = q.codebook.clone()
    q(z)
    assert torch.equal(q.codebook, before)  # eval mode leaves the codebook alone


def test_dead_code_is_restarted_on_a_vector_of_the_batch():
    q = Quantizer(4, 2, decay=0.99, dead_after=0.5).train()
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0], [1.0, 1.0], [2.0, 2.0]]))
    q.cluster_size.copy_(torch.tensor([5.0, 0.0, 5.0, 5.0]))   # code 1 is far away and unused: dead
    q.code_sum.copy_(q.codebook * q.cluster_size[:, None])
    z = torch.randn(2, 2, 3, 3) * 0.1
    q(z, torch.Generator().manual_seed(0))
    batch = z.permute(0, 2, 3, 1).reshape(-1, 2)
    assert q.restarted == 1
    assert (batch - q.codebook[1]).abs().sum(1).min() < 1e-6     # now sits on one of the batch's vectors
    assert q.cluster_size[1] == pytest.approx(0.5)


def test_usage_perplexity_and_unused():
    assert usage(torch.tensor([0, 1, 2, 3] * 5), 6) == (pytest.approx(4.0), 2)
    assert usage(torch.zeros(10, dtype=torch.long), 3) == (pytest.approx(1.0), 2)


def test_prior_is_causal_and_nll_matches_cross_entropy():
    torch.manual_seed(0)
    model = VQPrior(PriorConfig(vqvae=VQVAEConfig(image_size=32, **TINY_VQ), width=16, layers=2, heads=2)).eval()
    codes = torch.randint(0, 16, (3, 4, 4))
    tokens = model.start_tokens(codes)
    assert torch.equal(tokens[:, 0], torch.full((3,), 16)) and torch.equal(tokens[:, 1:], codes.flatten(1)[:, :-1])
    with torch.inference_mode():
        logits = model.transformer(tokens)
        changed = tokens.clone()
        changed[:, 9:] = (changed[:, 9:] + 1) % 16
        torch.testing.assert_close(model.transformer(changed)[:, :9], logits[:, :9])  # no peeking ahead
        expected = -logits.log_softmax(-1).gather(2, codes.flatten(1)[..., None]).squeeze(2).sum(1)
        torch.testing.assert_close(model.nll(codes), expected)


def _written_out_attention(attention, x):
    """Causal self-attention as its formula: softmax(q k^T / sqrt(d) + causal mask) v."""
    n, t, c = x.shape
    q, k, v = attention.qkv(x).view(n, t, 3, attention.heads, c // attention.heads).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / (c // attention.heads) ** 0.5
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return attention.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, c))


def test_fused_attention_and_the_key_value_cache_match_the_written_out_transformer():
    from latentforge.models.prior import CachedLogits, CodeTransformer

    rng = np.random.default_rng()   # fresh shapes and inputs each run
    k, length = int(rng.integers(5, 40)), int(rng.integers(8, 70))
    width, heads = [(16, 2), (24, 3), (32, 4)][int(rng.integers(3))]
    model = CodeTransformer(k, length, width, int(rng.integers(1, 4)), heads).eval()
    block = model.blocks[0].attention
    x = torch.randn(3, length, width)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), _written_out_attention(block, x), atol=1e-5, rtol=1e-4)
        tokens = torch.from_numpy(rng.integers(0, k, (4, length)))
        tokens[:, 0] = k
        full = model(tokens)
        cached, rows = CachedLogits(model), []
        for t in range(1, length + 1):   # one token a call, as the sampling loop feeds it
            rows.append(cached(tokens[:, :t]))
        torch.testing.assert_close(torch.cat(rows, 1), full, atol=1e-5, rtol=1e-4)
        split = int(rng.integers(1, length))   # a prefix at once, then one token
        fresh = CachedLogits(model)
        fresh(tokens[:, :split])
        torch.testing.assert_close(fresh(tokens[:, :split + 1])[:, 0], full[:, split], atol=1e-5, rtol=1e-4)
        other = tokens.clone()   # a call that does not extend the last one recomputes, it does not reuse
        other[:, 1] = (other[:, 1] + 1) % k
        torch.testing.assert_close(fresh(other[:, :split + 2])[:, 0], model(other[:, :split + 2])[:, -1],
                                   atol=1e-5, rtol=1e-4)


def test_the_step_graph_with_its_cache_gives_the_full_transformers_logits():
    from latentforge.models.prior import CodeTransformer, PriorStep
    from latentforge.runtime.vq_sampling import StepLogits

    rng = np.random.default_rng()   # fresh shapes and inputs each run
    k, length = int(rng.integers(5, 40)), int(rng.integers(4, 50))
    width, heads = [(16, 2), (24, 3), (32, 4)][int(rng.integers(3))]
    model = CodeTransformer(k, length, width, int(rng.integers(1, 4)), heads).eval()
    step = PriorStep(model)
    tokens = torch.from_numpy(rng.integers(0, k, (3, length)))
    tokens[:, 0] = k

    def run(token, position, cache):
        with torch.inference_mode():
            out = step(torch.from_numpy(token), torch.from_numpy(position), torch.from_numpy(cache))
        return [t.numpy() for t in out]

    with torch.inference_mode():
        full = model(tokens).numpy()
    stepper = StepLogits(run, tuple(step.empty_cache(1).shape[1:]))
    rows = [stepper(tokens[:, :t].numpy()) for t in range(1, length + 1)]
    np.testing.assert_allclose(np.concatenate(rows, 1), full, atol=1e-5, rtol=1e-4)
    # garbage in the not-yet-written slots changes nothing: they are masked
    cache = stepper.cache.copy()
    position = int(rng.integers(0, length))
    cache[:, :, :, :, position:] = rng.standard_normal(cache[:, :, :, :, position:].shape)
    logits, _ = run(tokens[:, position].numpy(), np.array([position]), cache)
    np.testing.assert_allclose(logits, full[:, position], atol=1e-5, rtol=1e-4)
    split = int(rng.integers(1, length))   # a fresh stepper given a whole prefix steps through it
    np.testing.assert_allclose(StepLogits(run, stepper.cache_shape)(tokens[:, :split].numpy())[:, 0],
                               full[:, split - 1], atol=1e-5, rtol=1e-4)


def test_next_code_temperature_and_top_k():
    logits = np.array([[0.0, 3.0, 1.0, 2.0]])
    assert next_code(logits, np.array([0.999]), 0.0, None)[0] == 1          # temperature 0: argmax
    assert next_code(logits, np.array([0.999]), 1.0, 1)[0] == 1             # top-1: argmax whatever u is
    assert set(next_code(np.repeat(logits, 200, 0), np.linspace(0, 0.999, 200), 1.0, 2)) == {1, 3}
    u = np.random.default_rng(0).random(20000)
    picks = next_code(np.repeat(logits, len(u), 0), u, 1.0, None)
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(np.bincount(picks, minlength=4) / len(u), p, atol=0.01)
    with pytest.raises(InputError, match="top_k"):
        sample_codes(lambda t: np.zeros((*t.shape, 4)), 1, 2, 4, top_k=5)


@pytest.fixture(scope="module")
def trained_prior(tmp_path_factory):
    """A VQ-VAE and a prior, each trained for a few steps on 32 px faces through the real training loop."""
    root = tmp_path_factory.mktemp("vq")
    common = dict(data="faces", image_size=32, steps=3, batch_size=8, sample_every=3, progress=False)
    vq = train(TrainConfig(kind="vqvae", out=str(root / "vq"), model_options=TINY_VQ, **common))
    prior = train(TrainConfig(kind="prior", source=str(vq.checkpoint), out=str(root / "prior"),
                              model_options={"width": 16, "layers": 1, "heads": 2}, **common))
    assert {"perplexity", "unused_codes", "recon_mse"} <= set(vq.metrics)
    return vq.checkpoint, prior.checkpoint


def test_export_parity_of_decoder_and_prior(trained_prior, tmp_path):
    from latentforge.checkpoint import load_checkpoint

    model, info = load_checkpoint(trained_prior[1])
    graphs = vq_graphs(model, info)
    parts = {name: build_part(source_of(model, info), name) for name in graphs}
    checks = {name: validate(parts[name], ort_runner(graph)) for name, graph in graphs.items()}
    assert all(p.passed for p in checks["decoder"] + checks["prior"])
    assert any("position=0" in p.name for p in checks["prior"])  # the first and the last slot are checked
    with torch.no_grad():  # a graph of other weights must fail the same check
        model.transformer.head.bias.add_(1.0)
    assert not all(p.passed for p in validate(parts["prior"], ort_runner(graphs["prior"])))
    written = export_vq(trained_prior[1], tmp_path / "dec.onnx", tmp_path / "prior.onnx")
    assert sorted(written) == ["decoder", "prior"]
    with pytest.raises(InputError, match="without a prior"):
        export_vq(trained_prior[0], tmp_path / "d2.onnx", tmp_path / "p2.onnx")


def test_export_command_writes_the_vq_decoder_and_the_prior(trained_prior, tmp_path):
    import onnx

    from latentforge.cli import main

    vq, prior = trained_prior
    assert main(["export", str(prior), "--part", "prior", "-o", str(tmp_path / "prior.onnx")]) == 0
    assert main(["export", str(vq), "--part", "decoder", "-o", str(tmp_path / "dec.onnx")]) == 0
    graphs = {name: onnx.load(tmp_path / name) for name in ("prior.onnx", "dec.onnx")}
    assert [i.name for i in graphs["prior.onnx"].graph.input] == ["token", "position", "cache"]
    assert [i.name for i in graphs["dec.onnx"].graph.input] == ["codes"]
    meta = {p.key: p.value for p in graphs["dec.onnx"].metadata_props}
    assert meta["latentforge.kind"] == "vqvae" and meta["latentforge.precision"] == "fp32"
    for proto in graphs.values():   # the golden check stays small: the prior's at an empty cache
        assert len(next(p.value for p in proto.metadata_props if p.key == "latentforge.golden")) < 64_000
    verified = latentforge.load(tmp_path / "prior.onnx", decoder=tmp_path / "dec.onnx", verify=True)
    assert verified.sample(1, seed=0).shape[0] == 1
    assert main(["export", str(vq), "--part", "prior", "-o", str(tmp_path / "p2.onnx")]) == 2
    assert not (tmp_path / "p2.onnx").exists()


def test_sample_same_seed_same_image_on_torch_and_onnxruntime(trained_prior):
    on_torch = latentforge.load(trained_prior[1], backend="torch")
    on_ort = latentforge.load(trained_prior[1], backend="onnxruntime")
    codes = on_torch.sample_codes(4, seed=11, temperature=1.5, top_k=8)
    np.testing.assert_array_equal(codes, on_ort.sample_codes(4, seed=11, temperature=1.5, top_k=8))
    a, b = on_torch.sample(4, seed=11), on_ort.sample(4, seed=11)
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b).max() <= 1
    assert not np.array_equal(on_torch.sample_codes(4, seed=12), on_torch.sample_codes(4, seed=11))
    vq = latentforge.load(trained_prior[0])
    with pytest.raises(InputError, match="without a prior"):
        vq.sample(1)
    images = on_torch.sample(2, seed=0)
    assert vq.encode(images).shape == (2, 4, 4)
    with pytest.raises(InputError, match="codes must be in"):
        vq.decode_codes(np.full((1, 4, 4), 16))


def test_exported_prior_and_decoder_load_and_sample_like_the_checkpoint(trained_prior, tmp_path, capsys):
    vq, prior = trained_prior
    dec, pri = tmp_path / "dec.onnx", tmp_path / "prior.onnx"
    assert main(["export", str(prior), "--part", "prior", "-o", str(pri)]) == 0
    # the prior's own VQ-VAE, exported apart from it
    assert main(["export", str(vq), "--part", "decoder", "-o", str(dec)]) == 0
    model = latentforge.load(pri, decoder=dec)
    assert (model.kind, model.backend, model.code_grid, model.codebook_size) == ("prior", "onnxruntime", 4, 16)
    seed = int(np.random.default_rng().integers(1 << 30))   # a fresh seed each run
    on_torch = latentforge.load(prior, backend="torch")
    np.testing.assert_array_equal(model.sample_codes(3, seed=seed, top_k=8),
                                  on_torch.sample_codes(3, seed=seed, top_k=8))
    assert np.abs(model.sample(3, seed=seed).astype(int) - on_torch.sample(3, seed=seed)).max() <= 1
    on_openvino = latentforge.load(pri, decoder=dec, backend="openvino")   # the same graphs, another runtime
    np.testing.assert_array_equal(on_openvino.sample_codes(3, seed=seed, top_k=8), on_torch.sample_codes(3, seed=seed,
                                                                                                         top_k=8))
    import subprocess
    import sys

    script = (f"import sys, latentforge; latentforge.load({str(pri)!r}, decoder={str(dec)!r}).sample(2, seed=0); "
              "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"   # an app running the graphs needs no torch
    decoder_only = latentforge.load(dec)
    assert decoder_only.kind == "vqvae" and decoder_only.decode_codes(np.zeros((2, 4, 4), int)).shape == (2, 32, 32, 3)
    with pytest.raises(InputError, match="draws none; to sample, load the prior graph"):
        decoder_only.sample(1)
    with pytest.raises(InputError, match="without the VQ encoder"):
        decoder_only.encode(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(InputError, match="also give its VQ decoder"):
        latentforge.load(pri)
    with pytest.raises(InputError, match="is not a VQ decoder"):
        latentforge.load(pri, decoder=pri)
    assert main(["sample", str(pri), "--decoder", str(dec), "-n", "2", "--top-k", "4",
                 "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


def test_a_prior_with_another_vq_vaes_decoder_is_refused(trained_prior, tmp_path):
    from latentforge.checkpoint import load_checkpoint, save_checkpoint
    from latentforge.errors import CheckpointError

    vq, prior = trained_prior
    module, info = load_checkpoint(vq)
    with torch.no_grad():
        module.decoder[0].bias.add_(0.5)   # same shapes, other weights
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, module, data=info.data, step=info.step)
    assert main(["export", str(prior), "--part", "prior", "-o", str(tmp_path / "prior.onnx")]) == 0
    assert main(["export", str(other), "--part", "decoder", "-o", str(tmp_path / "dec.onnx")]) == 0
    with pytest.raises(CheckpointError, match="do not come from the same VQ-VAE"):
        latentforge.load(tmp_path / "prior.onnx", decoder=tmp_path / "dec.onnx")


def test_evaluate_vq_cli(trained_prior, capsys):
    assert main(["evaluate", str(trained_prior[0]), "-n", "16"]) == 0
    out = capsys.readouterr().out
    assert "code perplexity" in out and "reconstruction MSE" in out
    assert main(["train", "vae", str(trained_prior[0]), "--out", "x"]) == 2
    assert "only `train prior`" in capsys.readouterr().err


def test_vqvae_and_prior_train_on_digits_and_on_an_image_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.full((40, 40, 3), 20 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    for data in ("digits", str(folder)):
        out = tmp_path / Path(data).name
        assert main(["train", "vqvae", "--data", data, "--out", str(out / "vq"), "--steps", "2", "--batch-size", "4",
                     "--codebook-size", "8", "--code-dim", "4", "--image-size", "32", "--no-progress",
                     "--model-options", '{"base_channels": 8, "res_blocks": 0}']) == 0
        assert main(["train", "prior", str(out / "vq" / "checkpoint.safetensors"), "--out", str(out / "prior"),
                     "--steps", "2", "--batch-size", "4", "--no-progress",
                     "--model-options", '{"width": 8, "layers": 1, "heads": 1}']) == 0
        model = latentforge.load(out / "prior" / "checkpoint.safetensors")
        assert model.sample(2, seed=0).shape == (2, 32, 32, 1 if data == "digits" else 3)
    assert main(["train", "vae", "--data", "digits", "--out", str(tmp_path / "x"), "--codebook-size", "8"]) == 2


def test_sampling_benchmark_runs_every_engine_and_they_draw_the_same_images(trained_prior, tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("vq_sampling_bench",
                                                  Path(__file__).parents[1] / "benchmarks" / "vq_sampling_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "vq-sampling"
    assert bench.main([str(trained_prior[1]), "--repeats", "1", "--batch", "2", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert len(rows) == 4 and all(r["images_per_s"] > 0 for r in rows)
    assert max(r["max_pixel_diff_vs_first_engine"] for r in rows) <= 1   # same seed, same codes, on every engine


def test_vq_models_refuse_what_they_cannot_do_in_one_line(trained_prior, tmp_path, capsys, monkeypatch):
    import latentforge.runtime.vq_model as vq_model

    vq, prior = trained_prior
    model = latentforge.load(prior, backend="torch")
    with pytest.raises(InputError, match="code grids, not latent vectors"):
        model.latent_dim
    with pytest.raises(InputError, match="latent-edit filter"):
        latentforge.Filter(model)
    with pytest.raises(InputError, match="runs at fp32"):
        latentforge.load(prior, precision="fp16")
    assert main(["interpolate", str(prior), "-o", str(tmp_path / "walk.png")]) == 2
    assert "code grids, not latent vectors" in capsys.readouterr().err
    assert not (tmp_path / "walk.png").exists()
    assert main(["export", str(prior), "--part", "prior", "--dtype", "fp16", "--fp16-io",
                 "-o", str(tmp_path / "p.onnx")]) == 2
    assert "--fp16-io does not apply to --part prior" in capsys.readouterr().err
    with pytest.raises(InputError, match="decoder= goes with an exported VQ prior"):
        latentforge.load(prior, decoder=vq)
    # more images than one chunk: drawn chunk by chunk, the same on the in-memory OpenVINO graphs as on torch
    monkeypatch.setattr(vq_model, "CHUNK", 3)
    on_openvino = latentforge.load(prior, backend="openvino")
    codes = model.sample_codes(7, seed=5)
    assert codes.shape == (7, 4, 4) and on_openvino.backend == "openvino"
    np.testing.assert_array_equal(codes, on_openvino.sample_codes(7, seed=5))
    np.testing.assert_array_equal(codes[:3], model.sample_codes(3, seed=5))   # the first chunk is seed's own draw
