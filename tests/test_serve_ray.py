"""`latentforge serve --ray`: the plain server's HTTP and WebSocket tests, run again over real sockets against
the Ray Serve deployment on one local Ray instance (2 CPUs, no dashboard, 127.0.0.1) that this module starts
and shuts down; @serve.batch gathering concurrent requests; a killed replica is survived."""
import io
import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import ray  # in the `test` extra, so CI runs these
from ray import serve
from websockets.sync.client import connect

import latentforge
from latentforge.errors import InputError
from latentforge.runtime.server import Limits
from latentforge.runtime.server.ray_app import APP_NAME, application
from test_serve import (  # noqa: F401  the same test functions, collected again here over the Ray client
    test_bad_requests_get_one_line_json_errors, test_decode_takes_npy_or_json_latents,
    test_edit_returns_the_in_process_edit_at_the_uploaded_size, test_models_lists_each_served_model,
    test_nan_latents_and_pickles_are_refused, test_sample_gives_the_in_process_images,
    test_sample_png_is_one_image_or_a_grid, vae)
from test_serve_stream import test_frames_equal_the_in_process_filter_and_edits_apply_live  # noqa: F401

WAIT = 60  # seconds a test waits for Serve before failing instead of hanging


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebSocketClient(httpx.Client):
    """httpx for HTTP, plus TestClient's websocket_connect over a real socket, so the stream tests run as is."""

    def websocket_connect(self, path: str):
        return _WebSocket(connect(f"ws://{self.base_url.host}:{self.base_url.port}{path}", open_timeout=WAIT))


class _WebSocket:
    def __init__(self, ws) -> None:
        self.ws = ws

    def __enter__(self):
        self.ws.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.ws.close()

    def send_bytes(self, data: bytes) -> None:
        self.ws.send(data)

    def send_text(self, text: str) -> None:
        self.ws.send(text)

    def receive(self) -> dict:
        message = self.ws.recv(timeout=WAIT)
        return {"bytes": message} if isinstance(message, bytes) else {"text": message}


@pytest.fixture(scope="module")
def base_url(vae_checkpoint, vae_onnx):
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        limits = Limits(max_n=8, max_body=200_000, max_pixels=512 * 512, max_message=50_000, max_wait_ms=200)
        serve.run(application({"vae": vae_checkpoint, "decoder": vae_onnx}, limits, threads=1),
                  name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def client(base_url):
    with WebSocketClient(base_url=base_url, timeout=WAIT) as client:
        yield client


def test_a_token_guards_the_ray_app_as_it_guards_the_plain_one(base_url, vae_checkpoint):
    serve.run(application({"vae": vae_checkpoint}, token="s3cret", threads=1), name="guarded",
              route_prefix="/guarded")
    try:
        with httpx.Client(base_url=f"{base_url}/guarded", timeout=WAIT) as c:
            assert c.get("/v1/models").status_code == 401
            ok = c.get("/v1/models", headers={"authorization": "Bearer s3cret"})
            assert ok.status_code == 200 and [m["name"] for m in ok.json()["models"]] == ["vae"]
    finally:
        serve.delete("guarded")


def _replica_actor():
    [actor] = [a for a in ray.util.list_named_actors(all_namespaces=True)
               if a["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#")]
    return actor


def test_a_killed_replica_answers_503_or_is_retried_and_serve_restarts_it(client):
    before = _replica_actor()
    ray.kill(ray.get_actor(before["name"], namespace=before["namespace"]), no_restart=True)
    statuses, deadline = set(), time.monotonic() + WAIT
    while time.monotonic() < deadline:
        r = client.post("/v1/models/vae/sample", json={"n": 1, "seed": 1}, headers={"accept": "application/x-npy"})
        statuses.add(r.status_code)
        if r.status_code == 200:
            break
        time.sleep(0.5)
    assert statuses <= {200, 503} and 200 in statuses, statuses
    assert _replica_actor()["name"] != before["name"]


def _decode_batches(client) -> tuple[float, float]:
    """(model calls, model calls on more than 2 rows) the vae's decode path has run, from the replica's /metrics."""
    text = client.get("/metrics").text
    count = re.search(r'latentforge_batch_size_count\{model="vae",path="decode"\} (\S+)', text)
    up_to_2 = re.search(r'latentforge_batch_size_bucket\{le="2.0",model="vae",path="decode"\} (\S+)', text)
    return float(count[1]), float(count[1]) - float(up_to_2[1])


def test_serve_batch_gathers_concurrent_requests_and_fails_only_the_bad_one(client, vae):
    zs = [latentforge.latents(2, vae.latent_dim, seed=s) for s in range(6)]
    bad = json.dumps({"z": [[float("nan")] * vae.latent_dim]}).encode()  # NaN: Python's JSON, not httpx's
    before = _decode_batches(client)

    def decode(z):
        body = z if isinstance(z, bytes) else json.dumps({"z": z.tolist()}).encode()
        return client.post("/v1/models/vae/decode", content=body, headers={"accept": "application/x-npy"})

    with ThreadPoolExecutor(len(zs) + 1) as pool:
        answers = list(pool.map(decode, zs + [bad]))
    for z, r in zip(zs, answers):
        assert r.status_code == 200 and np.array_equal(np.load(io.BytesIO(r.content)), vae.decode(z))
    assert answers[-1].status_code == 400 and "finite" in answers[-1].json()["error"]
    after = _decode_batches(client)
    assert after[1] > before[1], (before, after)  # some batch gathered the rows of several requests


def test_application_takes_a_fixed_or_autoscaled_replica_count(vae_checkpoint):
    fixed = application({"vae": vae_checkpoint}, replicas=3)._bound_deployment
    assert fixed._deployment_config.num_replicas == 3
    scaled = application({"vae": vae_checkpoint}, Limits(max_batch=8), autoscale=(1, 4))._bound_deployment
    config = scaled._deployment_config.autoscaling_config
    assert (config.min_replicas, config.max_replicas, config.target_ongoing_requests) == (1, 4, 8)
    with pytest.raises(InputError, match="0 <= MIN <= MAX"):
        application({"vae": vae_checkpoint}, autoscale=(3, 2))
    assert json.loads(json.dumps(fixed.init_args[0]))["vae"].startswith("/")  # absolute: every replica reads it


def test_the_cli_deploys_its_flags_through_ray(vae_checkpoint, monkeypatch):
    from latentforge.cli import main
    from latentforge.runtime.server import ray_app

    ran = {}
    monkeypatch.setattr(ray_app, "run", lambda app, **where: ran.update(app=app, **where))
    main(["serve", str(vae_checkpoint), "--ray", "--autoscale", "2,5", "--max-batch", "4", "--max-wait-ms", "7",
          "--address", "auto", "--port", "0", "--token", "t"])
    deployment = ran["app"]._bound_deployment
    paths, limits, load_options, token, _ = deployment.init_args
    assert list(paths) == [vae_checkpoint.name.split(".")[0]] and token == "t"
    assert (limits.max_batch, limits.max_wait_ms) == (4, 7.0) and "threads" in load_options
    assert deployment._deployment_config.autoscaling_config.max_replicas == 5
    assert ran["address"] == "auto" and ran["port"] == 0


def test_the_cli_joins_a_running_cluster_and_leaves_it_running(base_url, vae_checkpoint, tmp_path):
    """Last in this module: the CLI's app takes the fixture's app name, and deletes it on exit."""
    import shutil
    import signal
    import subprocess
    import sys

    model = tmp_path / "joined.safetensors"
    shutil.copy(vae_checkpoint, model)
    address = ray.get_runtime_context().gcs_address
    cli = subprocess.Popen([sys.executable, "-m", "latentforge.cli", "serve", str(model), "--ray", "--address",
                            address, "--port", base_url.rsplit(":", 1)[1], "--threads", "1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        names, deadline = [], time.monotonic() + 2 * WAIT
        while names != ["joined"] and time.monotonic() < deadline and cli.poll() is None:
            time.sleep(0.5)
            r = httpx.get(f"{base_url}/v1/models", timeout=WAIT)
            names = [m["name"] for m in r.json()["models"]] if r.status_code == 200 else []
        assert names == ["joined"], names
    finally:
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(WAIT) == 0
    assert APP_NAME not in serve.status().applications and ray.is_initialized()
