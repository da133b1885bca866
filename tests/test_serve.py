"""The HTTP routes of `latentforge serve`, in process through Starlette's TestClient: results equal the
in-process runtime, every bad input and limit is a JSON 4xx, auth and CORS."""
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

import latentforge
from latentforge.runtime.server import Limits, Service, create_app
from latentforge.runtime.server.service import Busy
from serve_helpers import decoded, png, png_bomb, solid

NPY = {"accept": "application/x-npy"}


@pytest.fixture(scope="module")
def vae(vae_checkpoint):
    return latentforge.load(vae_checkpoint)


def warm_service(vae, vae_onnx, limits: Limits) -> Service:
    """The tiny VAE checkpoint as "vae" and its exported decoder as "decoder", warmed up and ready."""
    service = Service({"vae": vae, "decoder": latentforge.load(vae_onnx)}, limits)
    service.warm_up()
    assert service.ready, service.startup_error
    return service


@pytest.fixture(scope="module")
def service(vae, vae_onnx):
    service = warm_service(vae, vae_onnx, Limits(max_n=8, max_body=200_000, max_pixels=512 * 512, max_queue=4))
    yield service
    service.close()


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service)) as client:
        yield client


def test_models_lists_each_served_model(client, vae):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"vae", "decoder"}
    assert models["vae"]["latent_dim"] == vae.latent_dim and models["vae"]["image_shape"] == [32, 32, 3]
    assert models["vae"]["attributes"] == ["smile"] and models["vae"]["can_filter"]
    assert models["decoder"]["backend"] == "onnxruntime" and not models["decoder"]["can_edit"]
    assert "path" not in json.dumps(models)


@pytest.mark.parametrize("name", ["vae", "decoder"])
def test_sample_gives_the_in_process_images(client, name, vae, vae_onnx):
    model = vae if name == "vae" else latentforge.load(vae_onnx)
    r = client.post(f"/v1/models/{name}/sample", json={"n": 3, "seed": 11, "temperature": 0.7}, headers=NPY)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
    images = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert images.dtype == np.uint8 and np.array_equal(images, model.sample(3, seed=11, temperature=0.7))
    other = client.post(f"/v1/models/{name}/sample", json={"n": 3, "seed": 12, "temperature": 0.7}, headers=NPY)
    assert not np.array_equal(np.load(io.BytesIO(other.content)), images)


def test_sample_png_is_one_image_or_a_grid(client, vae):
    one = client.post("/v1/models/vae/sample", json={"n": 1, "seed": 3})
    assert one.headers["content-type"] == "image/png"
    assert np.array_equal(decoded(one.content), vae.sample(1, seed=3)[0])
    assert decoded(client.post("/v1/models/vae/sample", json={"n": 4, "seed": 3}).content).shape == (70, 70, 3)


def test_decode_takes_npy_or_json_latents(client, vae):
    z = latentforge.latents(2, vae.latent_dim, seed=5)
    buffer = io.BytesIO()
    np.save(buffer, z)
    from_npy = client.post("/v1/models/vae/decode", content=buffer.getvalue(),
                           headers={"content-type": "application/x-npy", **NPY})
    from_json = client.post("/v1/models/vae/decode", json={"z": z.tolist()}, headers=NPY)
    expected = vae.decode(z)
    assert np.array_equal(np.load(io.BytesIO(from_npy.content)), expected)
    assert np.array_equal(np.load(io.BytesIO(from_json.content)), expected)


@pytest.mark.parametrize("route, body, status, words", [
    ("/v1/models/nope/sample", {"n": 1}, 404, "no model named 'nope'"),
    ("/v1/models/vae/sample", {"n": 0}, 400, "n must be an integer from 1 to 8"),
    ("/v1/models/vae/sample", {"n": 9}, 400, "n must be an integer from 1 to 8"),
    ("/v1/models/vae/sample", {"n": 1, "temperature": -1}, 400, "temperature must be"),
    ("/v1/models/vae/sample", {"n": 1, "seed": "x"}, 400, "seed must be an integer"),
    ("/v1/models/vae/sample", {"n": 1, "top_k": 3}, 400, "top_k applies to VQ priors"),
    ("/v1/models/vae/sample", [1, 2], 400, "must be a JSON object"),
    ("/v1/models/vae/decode", {"z": [[1.0] * 7]}, 400, "z must have shape [N, 8]"),
    ("/v1/models/vae/decode", {"z": [["a"] * 8]}, 400, "z must be"),
    ("/v1/models/vae/decode", {"z": [[0.0] * 8] * 9}, 400, "over this server's limit of 8"),
])
def test_bad_requests_get_one_line_json_errors(client, route, body, status, words):
    r = client.post(route, json=body)
    assert r.status_code == status and words in r.json()["error"]
    assert "\n" not in r.json()["error"] and "Traceback" not in r.text


def test_nan_latents_and_pickles_are_refused(client):
    r = client.post("/v1/models/vae/decode", content=b'{"z": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}')
    assert r.status_code == 400 and "finite" in r.json()["error"]
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = client.post("/v1/models/vae/decode", content=buffer.getvalue(), headers={"content-type": "application/x-npy"})
    assert r.status_code == 400 and "pickle" in r.json()["error"]
    assert client.post("/v1/models/vae/sample", content=b"{not json").status_code == 400


def test_edit_returns_the_in_process_edit_at_the_uploaded_size(client, vae):
    frame = np.random.default_rng(0).integers(0, 256, (45, 60, 3), dtype=np.uint8)
    r = client.post("/v1/models/vae/edit", files={"image": ("f.png", png(frame), "image/png")},
                    data={"edits": json.dumps({"smile": 1.5})})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    expected = latentforge.Filter(vae, edits={"smile": 1.5})(frame)
    assert np.array_equal(decoded(r.content), expected)


@pytest.mark.parametrize("image, edits, words", [
    (b"not an image", "{}", "could not be decoded"),
    (png(solid(8, 8, (1, 2, 3)))[:40], "{}", "could not be decoded"),
    (png_bomb(100_000, 100_000), "{}", "over this server's limit"),
    (png(solid(8, 8, (1, 2, 3))), '{"wings": 1}', "unknown attribute 'wings'"),
    (png(solid(8, 8, (1, 2, 3))), '{"smile": "a lot"}', "finite number"),
    (png(solid(8, 8, (1, 2, 3))), "{oops", "edits must be JSON"),
])
def test_edit_refuses_bad_images_and_edits(client, image, edits, words):
    r = client.post("/v1/models/vae/edit", files={"image": ("f.png", image, "image/png")}, data={"edits": edits})
    assert r.status_code == 400 and words in r.json()["error"]


def test_edit_needs_an_encoder_and_an_image(client):
    r = client.post("/v1/models/decoder/edit", files={"image": ("f.png", png(solid(8, 8, (0, 0, 0))), "image/png")})
    assert r.status_code == 400 and "no encoder" in r.json()["error"]
    r = client.post("/v1/models/vae/edit", data={"edits": "{}"})
    assert r.status_code == 400 and "'image' file" in r.json()["error"]


def test_bodies_over_the_limit_get_413_declared_or_streamed(client):
    big = b"0" * 300_000
    r = client.post("/v1/models/vae/decode", content=big, headers={"content-type": "application/x-npy"})
    assert r.status_code == 413 and "limit of 200000" in r.json()["error"]
    r = client.post("/v1/models/vae/decode", content=iter([big[:150_000], big[150_000:]]),
                    headers={"content-type": "application/x-npy"})  # chunked: no Content-Length
    assert r.status_code == 413 and "limit of 200000" in r.json()["error"]


def test_a_full_queue_answers_503_with_retry_after(client, service):
    held = [service.admit() for _ in range(service.limits.max_queue)]
    for place in held:
        place.__enter__()
    try:
        with pytest.raises(Busy):
            service.admit().__enter__()
        r = client.post("/v1/models/vae/sample", json={"n": 1})
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "retry" in r.json()["error"]
    finally:
        for place in held:
            place.__exit__(None, None, None)
    assert client.post("/v1/models/vae/sample", json={"n": 1}).status_code == 200


def test_readyz_follows_warm_up_and_draining(vae):
    service = Service({"vae": vae})
    with TestClient(create_app(service)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/models/vae/sample", json={"n": 1}).status_code == 503
        service.warm_up()
        assert client.get("/readyz").status_code == 200
        service.draining = True
        r = client.get("/readyz")
        assert r.status_code == 503 and "shutting down" in r.json()["error"]
        r = client.post("/v1/models/vae/sample", json={"n": 1})
        assert r.status_code == 503 and "shutting down" in r.json()["error"]
    service.close()


def test_metrics_count_routes_batches_and_queue(client):
    client.post("/v1/models/vae/sample", json={"n": 2, "seed": 1})
    client.post("/v1/models/nope/sample", json={"n": 1})
    text = client.get("/metrics").text
    assert 'latentforge_requests_total{route="/v1/models/{name}/sample",status="200"}' in text
    assert 'latentforge_requests_total{route="/v1/models/{name}/sample",status="404"}' in text
    assert 'latentforge_batch_size_count{model="vae",path="decode"}' in text
    assert "latentforge_queue_depth 0.0" in text and "latentforge_request_seconds_bucket" in text


def test_token_guards_every_v1_route(service):
    with TestClient(create_app(service, token="s3cret")) as client:
        assert client.get("/healthz").status_code == 200
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
            r = client.get("/v1/models", headers=headers)
            assert r.status_code == 401 and "bearer token" in r.json()["error"]
        assert client.get("/v1/models", headers={"authorization": "Bearer s3cret"}).status_code == 200
        from starlette.websockets import WebSocketDisconnect

        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect("/v1/models/vae/filter") as ws:
                ws.receive()
        with client.websocket_connect("/v1/models/vae/filter?token=s3cret") as ws:
            ws.send_bytes(png(solid(32, 32, (9, 9, 9))))
            assert isinstance(ws.receive_bytes(), bytes)


def test_cors_is_off_unless_an_origin_is_given(service, client):
    origin = {"origin": "http://example.test"}
    assert "access-control-allow-origin" not in client.get("/v1/models", headers=origin).headers
    with TestClient(create_app(service, cors_origins=["http://example.test"])) as cors:
        assert cors.get("/v1/models", headers=origin).headers["access-control-allow-origin"] == "http://example.test"


def test_an_internal_error_shows_no_traceback(service, monkeypatch):
    served = service.get("vae")

    def broken(z):
        raise RuntimeError("/secret/path/model.onnx exploded")

    monkeypatch.setattr(served.decoder, "fn", broken)
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        r = client.post("/v1/models/vae/sample", json={"n": 1})
    assert r.status_code == 500 and r.json() == {
        "error": "internal error while serving this request; the server log has the details"}


def test_explorer_moves_latents_by_edits_and_walks_between_seeds(client, vae):
    z = latentforge.latents(1, vae.latent_dim, seed=4, temperature=0.9)
    r = client.post("/v1/models/vae/sample", json={"seed": 4, "temperature": 0.9, "edits": {"smile": -1.5}},
                    headers=NPY)
    assert np.array_equal(np.load(io.BytesIO(r.content)), vae.decode(z - 1.5 * vae.attributes["smile"]))
    end = client.post("/v1/models/vae/sample", json={"seed": 4, "walk": {"to_seed": 5, "t": 1.0}}, headers=NPY)
    assert np.array_equal(np.load(io.BytesIO(end.content)), vae.sample(1, seed=5))
    half = client.post("/v1/models/vae/sample", json={"seed": 4, "walk": {"to_seed": 5, "t": 0.5}}, headers=NPY)
    start, stop = latentforge.latents(1, 8, seed=4)[0], latentforge.latents(1, 8, seed=5)[0]
    middle = latentforge.interpolate(start, stop, 101)[50]
    assert np.array_equal(np.load(io.BytesIO(half.content)), vae.decode(middle[None]))
    for body, words in (({"walk": {"to_seed": 5, "t": 2}}, "t from 0 to 1"), ({"edits": {"wings": 1}}, "wings"),
                        ({"edits": [1]}, "edits must be an object")):
        r = client.post("/v1/models/vae/sample", json=body)
        assert r.status_code == 400 and words in r.json()["error"]


def test_the_page_is_served_from_the_package_with_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Latent explorer" in page.text and "Webcam filter" in page.text
    script = client.get("/static/app.js")
    assert script.headers["content-type"].startswith("text/javascript") and "getUserMedia" in script.text
    for text in (page.text, script.text, client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert client.get("/static/../service.py").status_code == 404


def test_a_vq_prior_samples_with_top_k_and_refuses_latent_routes():
    from pathlib import Path

    prior = latentforge.load(Path(__file__).parents[1] / "benchmarks/results/models/faces_prior16.safetensors")
    service = Service({"prior": prior})
    service.warm_up()
    with TestClient(create_app(service)) as client:
        described = client.get("/v1/models").json()["models"][0]
        assert described["codebook_size"] == 512 and not (described["can_decode"] or described["can_edit"])
        r = client.post("/v1/models/prior/sample", json={"n": 2, "seed": 3, "temperature": 0.8, "top_k": 16},
                        headers=NPY)
        assert np.array_equal(np.load(io.BytesIO(r.content)), prior.sample(2, seed=3, temperature=0.8, top_k=16))
        for route, body in (("decode", {"z": [[0.0]]}), ("sample", {"edits": {"smile": 1}})):
            r = client.post(f"/v1/models/prior/{route}", json=body)
            assert r.status_code == 400 and "latent vectors" in r.json()["error"]
    service.close()
