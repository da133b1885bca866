"""The run-time NaN guard: a reduced-precision graph that overflows for some latents is recomputed at a higher
precision for those rows, counted, and correct; what overflows at fp32 too is a NumericalError, not black."""
import numpy as np
import pytest

import latentforge
from latentforge.errors import NumericalError
from latentforge.export import ExportOptions, export
from latentforge.export.pipeline import export_precisions
from latentforge.latents import latents


@pytest.fixture(scope="module")
def fp16_and_fp32(vae_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("guard")
    export_precisions(vae_checkpoint, {"fp32": folder / "vae.onnx", "fp16": folder / "vae.fp16.onnx"})
    return (latentforge.load(folder / "vae.onnx", backend="onnxruntime", precision="fp16"),
            latentforge.load(folder / "vae.onnx", backend="onnxruntime"))


def _overflowing(n: int, rows: list[int]) -> np.ndarray:
    """Fresh N(0, I) latents, with `rows` set to 7e4: past fp16's 65504, so the fp16 graph gives Inf/NaN there,
    while fp32 stays finite (the sigmoid head saturates)."""
    z = latents(n, 8, seed=int(np.random.default_rng().integers(2**31)))
    z[rows] = 7e4
    return z


def test_fp16_overflow_is_recomputed_at_fp32_and_counted(fp16_and_fp32):
    fp16, fp32 = fp16_and_fp32
    z = _overflowing(5, [1, 3])
    raw = fp16._decoder(z)   # the fp16 graph itself, unguarded: the overflow is real
    assert not np.isfinite(raw[[1, 3]]).all() and np.isfinite(raw[[0, 2, 4]]).all()
    before = fp16.nonfinite_recomputed
    out = fp16.decode_float(z)
    assert np.isfinite(out).all() and fp16.nonfinite_recomputed == before + 1
    np.testing.assert_allclose(out[[1, 3]], fp32.decode_float(z)[[1, 3]], atol=1e-5)
    np.testing.assert_array_equal(out[[0, 2, 4]], raw[[0, 2, 4]])   # finite rows keep the fp16 result
    images = fp16.decode(z)
    np.testing.assert_array_equal(images[[1, 3]], fp32.decode(z)[[1, 3]])
    assert fp16.nonfinite_recomputed == before + 2


def test_finite_output_is_not_counted(fp16_and_fp32):
    fp16, _ = fp16_and_fp32
    before = fp16.nonfinite_recomputed
    fp16.sample(4, seed=3)
    assert fp16.nonfinite_recomputed == before


@pytest.mark.parametrize("which, tried", [(0, "at fp16 and fp32 "), (1, "at fp32 ")])
def test_overflow_at_fp32_too_is_an_error_not_a_black_image(fp16_and_fp32, which, tried):
    model = fp16_and_fp32[which]
    z = latents(2, 8, seed=0)
    z[1] = 3e38   # finite in float32, but the first layer's sum overflows at any precision
    with pytest.raises(NumericalError) as error:
        model.decode(z)
    assert f"z[1] gave NaN/Inf {tried}(1 of 2 latents)" in str(error.value)


def test_a_batch_routed_model_guards_from_the_precision_that_ran(fp16_and_fp32):
    """A tuned model routes large batches to another decoder: the guard climbs from that decoder's precision."""
    _, fp32 = fp16_and_fp32
    routed = latentforge.load(fp32.path, backend="onnxruntime")
    routed.route_batches({1: routed, 4: fp16_and_fp32[0]})
    z = _overflowing(4, [2])
    out = routed.decode_float(z)
    np.testing.assert_allclose(out[2], fp32.decode_float(z)[[2]][0], atol=1e-5)
    assert routed.nonfinite_recomputed == 1


def test_the_fused_torch_path_never_writes_a_black_image(vae_checkpoint):
    """The fp32 uint8 op writes NaN as 0; the guard sees the float image first and refuses instead."""
    model = latentforge.load(vae_checkpoint, backend="torch")
    z = latents(3, 8, seed=1)
    good = model.decode(z)
    z[2] = 3e38   # the first layer's sum overflows float32
    with pytest.raises(NumericalError, match=r"z\[2\] gave NaN/Inf at fp32 \(1 of 3 latents\)"):
        model.decode(z)
    np.testing.assert_array_equal(model.decode(z[:2]), good[:2])


@pytest.fixture(scope="module")
def filters(vae_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("guard_filter")
    export_precisions(vae_checkpoint, {"fp32": folder / "f.onnx", "fp16": folder / "f.fp16.onnx"},
                      ExportOptions(part="filter"))   # onnxslim too: it must not fold the finiteness check away
    return (latentforge.load(folder / "f.onnx", backend="onnxruntime", precision="fp16"),
            latentforge.load(folder / "f.onnx", backend="onnxruntime"))


def test_the_filter_graph_flags_overflowing_frames_and_they_are_recomputed(filters):
    """uint8 cannot carry NaN: the graph's `finite` output says which frames the fp16 graph lost."""
    fp16, fp32 = filters
    rng = np.random.default_rng()
    feeds = {"frame": rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8),
             "offset": np.zeros((3, 8), np.float32), "temperature": np.zeros(1, np.float32),
             "eps": np.zeros((3, 8), np.float32)}
    feeds["offset"][1] = 7e4   # past fp16's 65504 where the offset enters the graph
    frames, finite = fp16.filter_graph().run(feeds)
    assert list(finite) == [1, 0, 1]   # the overflow is real
    expected = fp32.run_filter(feeds)
    out = fp16.run_filter(feeds)
    np.testing.assert_array_equal(out[1], expected[1])
    np.testing.assert_array_equal(out[[0, 2]], frames[[0, 2]])
    assert fp16.nonfinite_recomputed == 1 and fp32.nonfinite_recomputed == 0


def test_the_filter_and_the_server_count_on_the_model(filters):
    from latentforge.runtime.server import Service

    fp16, fp32 = filters
    f = latentforge.Filter(fp16, edits={"smile": 2e5})   # an offset of 1e5 on every latent
    frame = np.random.default_rng().integers(0, 256, (32, 32, 3), dtype=np.uint8)
    before = fp16.nonfinite_recomputed
    np.testing.assert_array_equal(f(frame), latentforge.Filter(fp32, edits={"smile": 2e5})(frame))
    assert fp16.nonfinite_recomputed == before + 1
    service = Service({"fast": fp16, "exact": fp32})
    text = service.metrics.text().decode()
    assert f'latentforge_nonfinite_recomputed_total{{model="fast"}} {float(before + 1)}' in text
    assert 'latentforge_nonfinite_recomputed_total{model="exact"} 0.0' in text
    service.close()


class _FakeEngine:
    """What the guard reads of a TensorRT engine (runtime/trt_backend.TrtGraph), without TensorRT."""
    name, precision, threads = "tensorrt", "fp16", 1

    def __init__(self, source):
        self.source = source


def test_a_tensorrt_engine_falls_back_to_the_fp32_graph_beside_it(vae_onnx, tmp_path):
    import shutil

    from latentforge.runtime.nan_guard import graph_at

    shutil.copy(vae_onnx, tmp_path / "vae.onnx")
    engine = _FakeEngine(tmp_path / "vae.fp16.plan")
    fp32 = graph_at(engine, "fp32", 1)
    assert fp32.name == "onnxruntime" and fp32.precision == "fp32" and fp32.source == tmp_path / "vae.onnx"
    assert graph_at(engine, "bf16", 1) is None   # no vae.bf16.onnx or .plan beside it
    assert graph_at(_FakeEngine(tmp_path / "other" / "x.fp16.plan"), "fp32", 1) is None


def _vq_with_an_unseen_large_code(folder):
    """A VQ decoder whose code 1 is 16x code 0's size, and an fp16 variant calibrated without code 1: the exporter
    keeps the layers code 0 overflows in fp32, and code 1 overflows where they hand over to fp16."""
    import onnx
    import torch

    from latentforge.checkpoint import save_checkpoint
    from latentforge.export import precision as prec
    from latentforge.export.graph import stamp
    from latentforge.models.vqvae import VQVAE, VQVAEConfig

    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(image_size=32, codebook_size=8, code_dim=4, downsample=3, base_channels=8,
                              res_blocks=0)).eval()
    with torch.no_grad():
        model.quantizer.codebook[0] *= 500.0
        model.quantizer.codebook[1] = model.quantizer.codebook[0] * 16
        model.decoder[0].weight *= 200.0
    checkpoint = save_checkpoint(folder / "vq.safetensors", model, data="random", step=0)
    export(checkpoint, folder / "dec.onnx", ExportOptions(part="decoder", slim=False))
    fp32 = onnx.load(folder / "dec.onnx")
    rng = np.random.default_rng(0)
    calibration = [{"codes": rng.choice([0, 2, 3, 4, 5, 6, 7], (4, 4, 4))} for _ in range(2)]
    fp16, _, kept = prec.variant(fp32, "fp16", calibration)
    assert kept   # layers kept fp32: the hand-over casts exist
    stamp(fp16, {**{p.key: p.value for p in fp32.metadata_props}, "latentforge.precision": "fp16"})
    onnx.save(fp16, folder / "dec.fp16.onnx")
    return folder / "dec.onnx"


def test_a_vq_decoder_overflowing_at_fp16_is_recomputed(tmp_path):
    path = _vq_with_an_unseen_large_code(tmp_path)
    fp16 = latentforge.load(path, backend="onnxruntime", precision="fp16")
    fp32 = latentforge.load(path, backend="onnxruntime")
    codes = np.random.default_rng().integers(2, 8, (3, 4, 4))
    codes[1, 2, 2] = 1
    raw = fp16._decode(codes)
    assert not np.isfinite(raw[1]).all() and np.isfinite(raw[[0, 2]]).all()   # the overflow is real
    out = fp16.decode_codes(codes)
    np.testing.assert_array_equal(out[1], fp32.decode_codes(codes)[1])
    assert fp16.nonfinite_recomputed == 1


def _prior_overflowing_after_code_3(folder, v_scale: float, fp16: bool):
    """A prior whose value for code 3 reaches `v_scale` * 5.6 in one attention channel (norm1's gain, capped at
    fp16's converter limit of 1e4, times a qkv weight) while every other code stays under 1/30 of it; the channel
    never reaches the output, so at a precision that holds it the logits are finite, and after a 3 code 5's logit
    leads by ~110 nats. fp16: also an fp16 variant calibrated without code 3, so it is converted whole and code 3's
    value overflows (Inf, then NaN logits) at the hand-over from the fp32 matmul to fp16."""
    import onnx
    import torch

    from latentforge.checkpoint import save_checkpoint
    from latentforge.export import precision as prec
    from latentforge.export.graph import stamp
    from latentforge.models import PriorConfig, VQPrior, VQVAEConfig

    torch.manual_seed(0)
    model = VQPrior(PriorConfig(vqvae=VQVAEConfig(image_size=32, codebook_size=8, code_dim=4, downsample=3,
                                                  base_channels=8, res_blocks=0), width=32, layers=1, heads=2)).eval()
    tr, width = model.transformer, 32
    gain = min(v_scale, 1e4)
    with torch.no_grad():   # channel 0 of the residual stream is code 3's alone
        tr.token.weight[:, 0] = 0
        tr.position[:, 0] = 0
        tr.token.weight[3, 0] = 100.0
        block = tr.blocks[0]
        for layer in (block.attention.out, block.mlp[-1]):
            layer.weight[0] = 0
            layer.bias[0] = 0
        block.norm1.weight[0] = gain
        block.attention.qkv.weight[:, 0] = 0
        block.attention.qkv.weight[2 * width, 0] = v_scale / gain   # value channel 0 ...
        block.attention.qkv.bias[2 * width] = 0
        block.attention.out.weight[:, 0] = 0                        # ... which the output never reads
        tr.head.weight[5, 0] = 20.0
    checkpoint = save_checkpoint(folder / "prior.safetensors", model, data="random", step=0)
    if not fp16:
        return checkpoint
    export(checkpoint, folder / "prior.onnx", ExportOptions(part="prior", slim=False))
    for precision in ("fp32", "fp16"):
        out = folder / ("dec.onnx" if precision == "fp32" else "dec.fp16.onnx")
        export(checkpoint, out, ExportOptions(part="decoder", precision=precision, slim=False))
    fp32 = onnx.load(folder / "prior.onnx")
    rng = np.random.default_rng(0)
    calibration = [{"token": rng.choice([0, 1, 2, 4, 5, 6, 7, 8], 4).astype(np.int64),
                    "position": np.array([p], np.int64),
                    "cache": rng.standard_normal((4, 1, 2, 2, 16, 16)).astype(np.float32)} for p in (0, 5, 15)]
    converted, _, kept = prec.variant(fp32, "fp16", calibration)
    assert not kept
    stamp(converted, {**{p.key: p.value for p in fp32.metadata_props}, "latentforge.precision": "fp16"})
    onnx.save(converted, folder / "prior.fp16.onnx")
    return folder / "prior.onnx"


def test_a_prior_overflowing_at_fp16_is_recomputed_while_sampling(tmp_path):
    path = _prior_overflowing_after_code_3(tmp_path, 5e4, fp16=True)
    fp16 = latentforge.load(path, decoder=tmp_path / "dec.onnx", backend="onnxruntime", precision="fp16")
    fp32 = latentforge.load(path, decoder=tmp_path / "dec.onnx", backend="onnxruntime")
    tokens = np.array([[8, 3], [8, 1]])
    raw = fp16._logits()(tokens)[:, -1]   # the fp16 step graph itself, unguarded: the overflow is real
    assert not np.isfinite(raw[0]).any() and np.isfinite(raw[1]).all()
    assert np.isfinite(fp32._logits()(tokens)).all()
    codes = fp16.sample_codes(8, seed=int(np.random.default_rng().integers(1 << 30))).reshape(8, -1)
    after_3 = codes[:, 1:][codes[:, :-1] == 3]
    assert after_3.size and (after_3 == 5).all()   # the fp32 logits (NaN would have drawn code 0)
    assert fp16.nonfinite_recomputed == 1          # one sampling run
    images = fp16.sample(2, seed=1)
    assert images.shape == (2, 32, 32, 3) and fp16.nonfinite_recomputed >= 1


def test_a_prior_overflowing_at_fp32_is_refused_and_the_codec_runs_it_in_float64(tmp_path):
    checkpoint = _prior_overflowing_after_code_3(tmp_path, 1e39, fp16=False)   # 5.6e39: past float32's 3.4e38
    model = latentforge.load(checkpoint, backend="torch")
    with pytest.raises(NumericalError, match=r"^the code prior gave NaN/Inf logits for image \d+ at code \d+ at fp32 "):
        model.sample_codes(8, seed=int(np.random.default_rng().integers(1 << 30)))
    assert model.nonfinite_recomputed == 0   # nothing higher to recompute at
    # The codec's prior runs in float64 (runtime/codec_vq.py), where the value is finite: exact tables, no guard
    coder = model.codec_factory(1).coder
    codes = np.random.default_rng().integers(0, 8, (2, 4, 4))
    codes[:, 1, 1] = 3
    np.testing.assert_array_equal(coder.decode(coder.encode(codes), 2), codes)
