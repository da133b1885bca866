"""The WebSocket filter of `latentforge serve`: frames equal the in-process Filter, live edits, latest frame
wins, one micro-batcher shared by every stream, stats, and bad frames that leave the stream open."""
import json
import threading

import numpy as np
import pytest
from starlette.websockets import WebSocketDisconnect

import latentforge
from latentforge.runtime.server import Limits
from serve_helpers import decoded, png, solid
from test_serve import client, warm_service  # noqa: F401  (client: the same fixture over this module's service)

WAIT = 30  # seconds a test waits for the server before failing instead of hanging


@pytest.fixture(scope="module")
def vae(vae_checkpoint):
    return latentforge.load(vae_checkpoint)


@pytest.fixture(scope="module")
def service(vae, vae_onnx):
    service = warm_service(vae, vae_onnx, Limits(max_message=50_000))
    yield service
    service.close()


def next_frame(ws) -> bytes:
    """The next binary message, skipping stats."""
    while True:
        message = ws.receive()
        if message.get("bytes") is not None:
            return message["bytes"]
        assert json.loads(message["text"])["type"] == "stats", message


def next_json(ws, kind: str) -> dict:
    while True:
        message = ws.receive()
        if message.get("text") is not None and json.loads(message["text"])["type"] == kind:
            return json.loads(message["text"])


def test_frames_equal_the_in_process_filter_and_edits_apply_live(client, vae):
    frame = np.random.default_rng(1).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    with client.websocket_connect("/v1/models/vae/filter?format=png") as ws:
        ws.send_bytes(png(frame))
        plain = decoded(next_frame(ws))
        ws.send_text(json.dumps({"edits": {"smile": 2.0}}))
        ws.send_bytes(png(frame))
        edited = decoded(next_frame(ws))
    assert np.array_equal(plain, latentforge.Filter(vae)(frame))
    assert np.array_equal(edited, latentforge.Filter(vae, edits={"smile": 2.0})(frame))
    assert not np.array_equal(plain, edited)


def test_jpeg_out_by_default_and_stats_at_least_once_a_second(client):
    with client.websocket_connect("/v1/models/vae/filter") as ws:
        ws.send_bytes(png(solid(32, 32, (200, 30, 30))))
        assert next_frame(ws)[:3] == b"\xff\xd8\xff"  # JPEG's start-of-image marker
        stats = next_json(ws, "stats")
    assert stats["frames_out"] == 1 and stats["dropped"] == 0
    assert {"fps", "p50_ms", "p99_ms", "frames_in"} <= set(stats)


def test_bad_frames_and_controls_get_errors_and_the_stream_goes_on(client):
    with client.websocket_connect("/v1/models/vae/filter") as ws:
        for bad in (b"garbage", json.dumps({"edits": {"wings": 1}}), json.dumps({"temperature": -1}),
                    json.dumps({"volume": 11}), "{not json"):
            ws.send_bytes(bad) if isinstance(bad, bytes) else ws.send_text(bad)
            assert next_json(ws, "error")["error"]
        ws.send_bytes(png(solid(16, 16, (0, 90, 0))))
        assert decoded(next_frame(ws)).shape == (16, 16, 3)


def test_oversized_messages_close_the_stream_with_1009(client):
    with client.websocket_connect("/v1/models/vae/filter") as ws:
        ws.send_bytes(b"\0" * 60_000)
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                ws.receive_bytes()
    assert closed.value.code == 1009


@pytest.mark.parametrize("name, code", [("nope", 1008), ("decoder", 1003)])
def test_unknown_or_unfit_models_are_refused(client, name, code):
    with client.websocket_connect(f"/v1/models/{name}/filter") as ws:
        assert ws.receive_json()["error"]
        closed = ws.receive()
    assert closed["type"] == "websocket.close" and closed["code"] == code


class Gate:
    """Holds the shared filter batcher inside its model call until released, recording each batch's size."""

    def __init__(self, served, monkeypatch) -> None:
        self.entered, self.release, self.sizes = threading.Event(), threading.Event(), []
        run = served.graph.run

        def gated(feeds, out=None):
            self.sizes.append(len(feeds["frame"]))
            self.entered.set()
            assert self.release.wait(WAIT)
            return run(feeds, out)

        monkeypatch.setattr(served.graph, "run", gated)


def sync(ws) -> None:
    """Returns once the server has read everything sent before: a bad control message is answered in order."""
    ws.send_text("{}x")
    next_json(ws, "error")


def test_latest_frame_wins_and_stale_frames_are_counted(client, service, vae, monkeypatch):
    gate = Gate(service.get("vae"), monkeypatch)
    frames = [solid(32, 32, (40 * i, 255 - 40 * i, 90)) for i in range(4)]
    with client.websocket_connect("/v1/models/vae/filter?format=png") as ws:
        ws.send_bytes(png(frames[0]))
        assert gate.entered.wait(WAIT)
        for frame in frames[1:]:
            ws.send_bytes(png(frame))
        sync(ws)
        gate.release.set()
        outputs = [decoded(next_frame(ws)), decoded(next_frame(ws))]
        stats = next_json(ws, "stats")
        while stats["frames_out"] < 2:
            stats = next_json(ws, "stats")
    assert gate.sizes == [1, 1]  # before the in-process reference below runs the same (gated) graph
    f = latentforge.Filter(vae)
    assert np.array_equal(outputs[0], f(frames[0])) and np.array_equal(outputs[1], f(frames[3]))
    assert stats["dropped"] == 2 and stats["frames_in"] == 4 and stats["frames_out"] == 2
    assert 'latentforge_stream_frames_total{outcome="dropped"}' in client.get("/metrics").text


def test_streams_share_one_micro_batcher(client, service, vae, monkeypatch):
    served = service.get("vae")
    gate = Gate(served, monkeypatch)
    frames = [solid(32, 32, (10, 20 + 70 * i, 30)) for i in range(3)]
    with client.websocket_connect("/v1/models/vae/filter?format=png") as a, \
            client.websocket_connect("/v1/models/vae/filter?format=png") as b, \
            client.websocket_connect("/v1/models/vae/filter?format=png") as c:
        a.send_bytes(png(frames[0]))
        assert gate.entered.wait(WAIT)
        b.send_bytes(png(frames[1]))
        c.send_bytes(png(frames[2]))
        for _ in range(WAIT * 100):  # until both frames wait in the batcher behind the held call
            if served.frames.pending == 2:
                break
            threading.Event().wait(0.01)
        gate.release.set()
        outputs = [decoded(next_frame(ws)) for ws in (a, b, c)]
    assert gate.sizes == [1, 2]
    f = latentforge.Filter(vae)
    for frame, out in zip(frames, outputs):
        assert np.array_equal(out, f(frame))


def test_temperature_control_draws_noise(client, vae):
    frame = solid(32, 32, (120, 60, 200))
    with client.websocket_connect("/v1/models/vae/filter?format=png") as ws:
        ws.send_text(json.dumps({"temperature": 1.0}))
        ws.send_bytes(png(frame))
        noisy = decoded(next_frame(ws))
        ws.send_text(json.dumps({"temperature": 0}))
        ws.send_bytes(png(frame))
        calm = decoded(next_frame(ws))
    assert np.array_equal(calm, latentforge.Filter(vae)(frame))
    assert not np.array_equal(noisy, calm)
