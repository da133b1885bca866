"""`latentforge serve` as a real server on 127.0.0.1 and an ephemeral port: drain on exit (in-flight requests
finish, streams close with 1001, /readyz 503), SIGTERM in a real process, and the refusal of a public bind
without a token."""
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import latentforge
from latentforge.cli import main
from latentforge.runtime.server import Service, build_server
from serve_helpers import png, solid

WAIT = 60  # seconds any one wait may take before the test fails instead of hanging


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post(port: int, path: str, body: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(port: int, alive=lambda: True) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and alive():
        try:
            if get(port, "/readyz")[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        time.sleep(0.1)
    raise AssertionError("the server never became ready")


def start_server(checkpoint):
    """A warmed-up Service for `checkpoint` on a real uvicorn server in a thread: (service, server, thread, port)."""
    service = Service({"vae": latentforge.load(checkpoint)})
    service.warm_up()
    port = free_port()
    server = build_server(service, port=port, log_level="warning")
    runner = threading.Thread(target=server.run)
    runner.start()
    return service, server, runner, port


def close_code(ws) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=WAIT)
    return closed.value.rcvd.code


def test_drain_finishes_in_flight_work_and_closes_streams_with_1001(vae_checkpoint, monkeypatch):
    service, server, runner, port = start_server(vae_checkpoint)
    try:
        wait_ready(port)
        entered, release = threading.Event(), threading.Event()
        decode = service.get("vae").decoder.fn

        def held(z):
            entered.set()
            assert release.wait(WAIT)
            return decode(z)

        monkeypatch.setattr(service.get("vae").decoder, "fn", held)
        answer = {}
        in_flight = threading.Thread(target=lambda: answer.update(r=post(port, "/v1/models/vae/sample", {"n": 2})))
        with connect(f"ws://127.0.0.1:{port}/v1/models/vae/filter") as ws:
            ws.send(png(solid(32, 32, (5, 5, 5))))
            assert isinstance(ws.recv(timeout=WAIT), bytes)
            in_flight.start()
            assert entered.wait(WAIT)
            server.handle_exit(signal.SIGTERM, None)
            assert close_code(ws) == 1001
        assert get(port, "/readyz")[0] == 503
        status, body = post(port, "/v1/models/vae/sample", {"n": 1})
        assert status == 503 and "shutting down" in json.loads(body)["error"]
        release.set()
        in_flight.join(WAIT)
        assert answer["r"][0] == 200 and answer["r"][1][:4] == b"\x89PNG"
        runner.join(WAIT)
        assert not runner.is_alive()
    finally:
        release.set()
        server.should_exit = True
        runner.join(WAIT)
        service.close()


def test_sigterm_closes_streams_and_exits_0(vae_checkpoint):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "latentforge.cli", "serve", str(vae_checkpoint),
                             "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port, alive=lambda: proc.poll() is None)
        status, models = get(port, "/v1/models")
        assert status == 200 and models["models"][0]["name"] == "vae"
        with connect(f"ws://127.0.0.1:{port}/v1/models/vae/filter") as ws:
            ws.send(png(solid(48, 64, (200, 100, 0))))
            assert isinstance(ws.recv(timeout=WAIT), bytes)
            proc.send_signal(signal.SIGTERM)
            assert close_code(ws) == 1001
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    assert "Traceback" not in err, err


def test_a_public_bind_without_a_token_refuses_to_start(vae_checkpoint, capsys):
    assert main(["serve", str(vae_checkpoint), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass --token" in err and "0.0.0.0" in err


def test_two_models_with_one_name_are_refused(vae_checkpoint, vae_onnx, capsys):
    assert main(["serve", str(vae_checkpoint), str(vae_onnx), "--port", "1"]) == 2
    assert "both be served as 'vae'" in capsys.readouterr().err
