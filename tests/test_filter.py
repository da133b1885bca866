"""The filter: graph path against its encode-decode twin, any frame size, edits between frames,
attribute files, similarity skip, and the pipeline's order, drop policy and error routing."""
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

from latentforge import Filter, InputError, load
from latentforge.runtime.pipeline import FilterStats, run_pipeline


@pytest.fixture(scope="module")
def vae(vae_checkpoint):
    return load(vae_checkpoint)


def _frames(n, h, w, seed=None):
    return list(np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_graph_path_matches_encode_decode_twin(vae, temperature):
    fast = Filter(vae, {"smile": 1.5}, temperature=temperature, seed=3)
    plain = Filter(vae, {"smile": 1.5}, temperature=temperature, seed=3, use_graph=False)
    assert (fast.path, plain.path) == ("filter graph", "encode-decode")
    assert (fast.backend, plain.backend) == ("onnxruntime", "torch")
    for frame in _frames(4, 45, 71):  # odd sizes, wider than tall: crop and both resizes
        a, b = fast(frame), plain(frame)
        assert a.shape == frame.shape and a.dtype == np.uint8
        assert np.abs(a.astype(int) - b).max() <= 1  # a .5 may round either way in float32


def test_exported_filter_graph_matches_the_checkpoint(vae, vae_filter_onnx):
    from_graph = Filter(load(vae_filter_onnx), {"smile": -1.0})
    assert from_graph.model.backend == "onnxruntime" and from_graph.path == "filter graph"
    reference = Filter(vae, {"smile": -1.0}, use_graph=False)
    for frame in _frames(3, 32, 32):
        assert np.abs(from_graph(frame).astype(int) - reference(frame)).max() <= 1
    with pytest.raises(InputError, match="filter graph .* not a decoder"):
        load(vae_filter_onnx).decode(np.zeros((1, 8), np.float32))


def test_crop_keeps_the_borders_and_a_decoder_only_model_is_refused(vae, vae_onnx):
    frame = _frames(1, 32, 80)[0]  # model is square: a 32x32 crop at columns 24..55
    out = Filter(vae)(frame)
    np.testing.assert_array_equal(out[:, :24], frame[:, :24])
    np.testing.assert_array_equal(out[:, 56:], frame[:, 56:])
    assert not np.array_equal(out[:, 24:56], frame[:, 24:56])
    with pytest.raises(InputError, match="no encoder and no filter graph"):
        Filter(load(vae_onnx))
    for bad in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 4), np.uint8)):
        with pytest.raises(InputError, match=r"frames must be uint8 \[H, W, 3\]"):
            Filter(vae)(bad)


def test_edits_change_between_frames(vae):
    f = Filter(vae)
    frame = _frames(1, 32, 32)[0]
    plain = f(frame)
    f.set_edits({"smile": 3.0})
    edited = f(frame)
    f.set_edits({})
    assert not np.array_equal(plain, edited)
    np.testing.assert_array_equal(f(frame), plain)
    with pytest.raises(InputError, match="unknown attribute 'beard'; this model has: smile"):
        f.set_edits({"beard": 1.0})
    with pytest.raises(InputError, match="finite number"):
        f.set_edits({"smile": float("nan")})


def test_attributes_file_supplies_directions(vae, tmp_path):
    direction = np.random.default_rng().standard_normal(8).astype(np.float32)
    save_file({"beard": direction}, tmp_path / "attrs.safetensors")
    f = Filter(vae, {"beard": 2.0}, attributes=tmp_path / "attrs.safetensors")
    np.testing.assert_array_equal(f._offset[0], 2.0 * direction)
    frame = _frames(1, 32, 32)[0]
    assert not np.array_equal(f(frame), Filter(vae)(frame))
    save_file({"beard": direction[:5]}, tmp_path / "short.safetensors")
    with pytest.raises(InputError, match=r"'beard' has shape \[5\], but this model's latents are \[8\]"):
        Filter(vae, attributes=tmp_path / "short.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a readable .safetensors"):
        Filter(vae, attributes=tmp_path / "junk.safetensors")


def test_similarity_skip_reuses_outputs_and_counts(vae):
    still = [_frames(1, 32, 32, seed=1)[0]] * 20
    f = Filter(vae, skip_similar=0.9)
    outs = list(f.stream(still))
    # identical frames skip with probability 1, at most 10 in a row: frames 1-10 and 12-19 are reused
    assert f.stats.skipped == 18 and f.stats.frames_out == 20
    assert all(np.array_equal(o, outs[0]) for o in outs)
    noisy = Filter(vae, skip_similar=0.9)
    list(noisy.stream(_frames(10, 32, 32)))  # independent noise frames are far from similar
    assert noisy.stats.skipped == 0
    with pytest.raises(InputError, match="skip_similar"):
        Filter(vae, skip_similar=1.5)


def _identity_stages(delay=0.0, fail_at=None):
    def infer(x):
        if x == fail_at:
            raise InputError(f"frame {x} is bad")
        time.sleep(delay)
        return x
    return (lambda x: (x, x, None)), infer, (lambda pre, out: out)


def test_pipeline_keeps_every_frame_in_order_without_drop():
    stats = FilterStats()
    pre, infer, post = _identity_stages(delay=0.001)
    assert list(run_pipeline(range(50), pre, infer, post, stats, drop=False, queue_size=2)) == list(range(50))
    assert stats.dropped == 0


def test_pipeline_newest_frame_wins_when_the_source_is_faster():
    stats = FilterStats()
    pre, infer, post = _identity_stages(delay=0.005)
    outs = list(run_pipeline(range(200), pre, infer, post, stats, drop=True, queue_size=2))
    assert stats.dropped > 0 and len(outs) + stats.dropped == 200
    assert outs == sorted(outs) and outs[-1] == 199  # in order, and the last frame is never dropped


def test_pipeline_errors_reach_the_caller_and_threads_stop():
    before = threading.active_count()
    pre, infer, post = _identity_stages(fail_at=3)
    got = []
    with pytest.raises(InputError, match="frame 3 is bad"):
        for out in run_pipeline(range(100), pre, infer, post, FilterStats(), drop=False, queue_size=2):
            got.append(out)
    assert got == [0, 1, 2]
    pre, infer, post = _identity_stages()
    for out in run_pipeline(iter(range(10**9)), pre, infer, post, FilterStats(), drop=False, queue_size=2):
        if out == 5:
            break  # a consumer that stops early
    time.sleep(0.2)
    assert threading.active_count() == before


def test_stream_stats_are_live_and_complete(vae):
    f = Filter(vae)
    seen = []
    for out in f.stream(_frames(12, 40, 30)):
        seen.append(f.stats.snapshot()["frames_out"])
    snap = f.stats.snapshot()
    assert seen[-1] == 12 and snap["frames_in"] == 12 and snap["fps"] > 0
    assert all(snap["stages"][s]["n"] == 12 and snap["stages"][s]["p99_ms"] >= snap["stages"][s]["p50_ms"]
               for s in ("pre", "infer", "post"))
    assert "12 frames out of 12" in f.summary()


def test_a_256px_vae_filters_frames(tmp_path):
    import torch

    from latentforge.checkpoint import save_checkpoint
    from latentforge.models import ConvVAE, VAEConfig

    torch.manual_seed(0)
    vae = ConvVAE(VAEConfig(image_size=256, base_channels=4, max_channels=8, latent_dim=4)).eval()
    model = load(save_checkpoint(tmp_path / "vae256.safetensors", vae, data="random", step=0))
    frame = _frames(1, 200, 300)[0]
    fast, plain = Filter(model)(frame), Filter(model, use_graph=False)(frame)
    assert fast.shape == frame.shape and np.abs(fast.astype(int) - plain).max() <= 1


def test_in_memory_and_exported_filter_graphs_map_a_nan_output_to_0(vae_checkpoint, tmp_path):
    import onnxruntime as ort
    import torch

    from latentforge.checkpoint import load_checkpoint
    from latentforge.export.pipeline import ExportOptions, export
    from latentforge.export.source import source_of
    from latentforge.runtime.filter_graph import filter_graph_bytes

    model, info = load_checkpoint(vae_checkpoint)
    with torch.no_grad():  # the decoder's first output channel becomes NaN everywhere
        model.decoder[-2].bias[0] = float("nan")
    exported = export(source_of(model, info), tmp_path / "filter.onnx", ExportOptions(part="filter")).path
    n, size, dim = 2, info.config["image_size"], info.config["latent_dim"]
    feed = {"frame": np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8),
            "offset": np.zeros((n, dim), np.float32), "temperature": np.zeros(1, np.float32),
            "eps": np.zeros((n, dim), np.float32)}
    outs = [ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, feed)[0]
            for graph in (filter_graph_bytes(model, info), str(exported))]
    for out in outs:
        assert (out[..., 0] == 0).all() and out[..., 1:].any()
    assert np.abs(outs[0].astype(int) - outs[1]).max() <= 1
