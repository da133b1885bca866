"""Fuzz targets for what latentforge reads besides model and data files: tuning records (`NAME.tune.json`, read by
`load(..., backend="auto")`) and requests to the server (HTTP routes and the WebSocket filter), registered into
tests/fuzz_targets.py's TARGETS by `request_targets`.

A tuning record case is a copy of the tiny VAE's `.onnx` with a mutated record beside it; it must load (a stale or
unreadable record is ignored with a warning) or be refused in one line. A request case is a JSON description of
one HTTP request, or of one WebSocket session's messages, sent to an in-process app over the tiny VAE (built once
per worker); it must be answered 2xx, or 4xx/503 with a one-line JSON error, and a WebSocket session must get an
answer to every frame with no "internal error": a 500, an internal error or an exception is a finding.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

from hypothesis import strategies as st

from fuzz_formats import apply_bytes, byte_mutation, json_values, text

# --- tuning records

record_mutation = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(["format", "key", "winners", "min_psnr", "timings", "rejected",
                                                 "seconds", "graph_sha256", "x"]), json_values),
    st.tuples(st.just("winner"), st.sampled_from(["1", "4", "0", "-1", "1e3", "x"]),
              st.sampled_from(["backend", "precision", "p50_ms", "psnr_db", "x"]),
              st.one_of(json_values, st.sampled_from(["onnxruntime", "openvino", "torch", "tensorrt", "fp16",
                                                      "int8", "bf16", "fp64", "../x"]))),
    st.tuples(st.just("drop_winner"), st.sampled_from(["1", "4"])),
    st.tuples(st.just("key"), st.sampled_from(["model_sha256", "cpu", "isa", "physical_cores", "gpus", "libraries"]),
              json_values),
    st.tuples(st.just("whole"), json_values),
    st.tuples(st.just("bytes"), byte_mutation),
)


def write_record_seed(folder: Path) -> None:
    """`tuned.onnx` (the VAE's graph) and the record `tune` would write beside it on this machine."""
    from latentforge.runtime.tune_record import TuneRecord, Winner, record_key, write_record

    model = folder / "tuned.onnx"
    shutil.copy(folder / "vae.onnx", model)
    winners = {1: Winner("onnxruntime", "fp32", 0.2, float("inf")), 4: Winner("onnxruntime", "fp32", 0.5, 90.0)}
    write_record(model, TuneRecord(record_key(model), winners, 40.0, {1: {"onnxruntime fp32": 0.2}}))


def _write_record(seed: Path, case: Path, mutations: list) -> Path:
    model = case / "model.onnx"
    shutil.copy(seed, model)
    record = json.loads(seed.with_name(seed.stem + ".tune.json").read_text())
    after = []
    for op, *args in mutations:
        winners = record.get("winners") if isinstance(record, dict) else None
        if op == "field" and isinstance(record, dict):
            record[args[0]] = args[1]
        elif op == "winner" and isinstance(winners, dict):
            entry = winners.setdefault(args[0], {"backend": "onnxruntime", "precision": "fp32", "p50_ms": 1.0,
                                                 "psnr_db": 50.0})
            if isinstance(entry, dict):
                entry[args[1]] = args[2]
        elif op == "drop_winner" and isinstance(winners, dict):
            winners.pop(args[0], None)
        elif op == "key" and isinstance(record, dict) and isinstance(record.get("key"), dict):
            record["key"][args[0]] = args[1]
        elif op == "whole":
            record = args[0]
        elif op == "bytes":
            after.append(args[0])
    raw = json.dumps(record, allow_nan=True).encode()
    for mutation in after:
        raw = apply_bytes(raw, mutation)
    model.with_name("model.tune.json").write_bytes(raw)
    return model


def load_record(path: Path) -> str:
    import numpy as np

    import latentforge

    model = latentforge.load(path, threads=1)   # auto: the record's winners, or the default with a warning
    for n in (1, 5):
        out = model.sample(n, seed=0)
        assert out.dtype == np.uint8 and len(out) == n, (out.dtype, out.shape)
    return f"{model.backend} {model.precision}"


# --- server requests

ROUTES = ["/v1/models/vae/sample", "/v1/models/vae/decode", "/v1/models/vae/edit", "/v1/models", "/v1/models/x/sample",
          "/v1/models/vae/filter", "/v1/models/../sample", "/v1/models/%00/decode", "/metrics", "/readyz", "/"]
request_mutation = st.one_of(
    st.tuples(st.just("path"), st.one_of(st.sampled_from(ROUTES), text)),
    st.tuples(st.just("method"), st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])),
    st.tuples(st.just("header"), st.sampled_from(["content-type", "accept", "authorization", "x-latentforge"]),
              st.one_of(text, st.sampled_from(["application/json", "application/x-npy", "image/png",
                                               "multipart/form-data; boundary=b", "multipart/form-data"]))),
    st.tuples(st.just("json"), st.sampled_from(["n", "seed", "temperature", "top_k", "z", "edits", "format", "x"]),
              json_values),
    st.tuples(st.just("query"), st.sampled_from(["format", "n"]), text),
    st.tuples(st.just("body"), byte_mutation),
    st.tuples(st.just("frame"), st.integers(0, 7), byte_mutation),
    st.tuples(st.just("control"), st.integers(0, 7), st.one_of(json_values.map(json.dumps), text)),
)


def _png(size: tuple[int, int]) -> bytes:
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def write_request_seeds(folder: Path) -> None:
    """One JSON file per kind of request the server takes, each valid."""
    import numpy as np

    b64 = lambda data: base64.b64encode(data).decode()   # noqa: E731
    npy = io.BytesIO()
    np.save(npy, np.zeros((2, 8), np.float32))
    boundary = "latentforgeboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"f.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + _png((20, 24)) + (
           f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"edits\"\r\n\r\n{{\"smile\": 1.0}}\r\n"
           f"--{boundary}--\r\n").encode()
    seeds = {
        "sample": {"method": "POST", "path": "/v1/models/vae/sample", "json": {"n": 2, "seed": 1, "temperature": 0.8}},
        "sample_npy": {"method": "POST", "path": "/v1/models/vae/sample", "json": {"n": 1},
                       "headers": {"accept": "application/x-npy"}},
        "decode": {"method": "POST", "path": "/v1/models/vae/decode", "json": {"z": [[0.1] * 8]}},
        "decode_npy": {"method": "POST", "path": "/v1/models/vae/decode", "body": b64(npy.getvalue()),
                       "headers": {"content-type": "application/x-npy"}},
        "edit": {"method": "POST", "path": "/v1/models/vae/edit", "body": b64(form),
                 "headers": {"content-type": f"multipart/form-data; boundary={boundary}"}},
        "models": {"method": "GET", "path": "/v1/models"},
        "filter": {"ws": "/v1/models/vae/filter", "messages": [
            {"frame": b64(_png((16, 16)))}, {"control": json.dumps({"edits": {"smile": 1.5}, "temperature": 0.3})},
            {"frame": b64(_png((40, 30)))}]},
    }
    (folder / "requests").mkdir()
    for name, seed in seeds.items():
        (folder / "requests" / f"{name}.json").write_text(json.dumps(seed))


def _write_request(seed: Path, case: Path, mutations: list) -> Path:
    request = json.loads(seed.read_text())
    body = base64.b64decode(request.pop("body", "")) if "body" in request else None
    messages = request.get("messages", [])
    for op, *args in mutations:
        if op == "path":
            request["ws" if "ws" in request else "path"] = args[0]
        elif op == "method" and "method" in request:
            request["method"] = args[0]
        elif op == "header":
            request.setdefault("headers", {})[args[0]] = args[1]
        elif op == "json" and "json" in request and isinstance(request["json"], dict):
            request["json"][args[0]] = args[1]
        elif op == "query":
            request.setdefault("query", {})[args[0]] = args[1]
        elif op == "body" and body is not None:
            body = apply_bytes(body, args[0])
        elif op == "body" and "json" in request:
            body = apply_bytes(json.dumps(request.pop("json")).encode(), args[0])
        elif op == "frame" and messages:
            frames = [m for m in messages if "frame" in m] or [messages[0]]
            message = frames[args[0] % len(frames)]
            message["frame"] = base64.b64encode(apply_bytes(base64.b64decode(message.get("frame", "")),
                                                            args[1])).decode()
            message.pop("control", None)
        elif op == "control" and messages:
            messages.insert(args[0] % (len(messages) + 1), {"control": args[1]})
    if body is not None:
        request["body"] = base64.b64encode(body).decode()
    request["seeds"] = str(seed.parents[1])   # where the worker finds the model it serves
    path = case / "request.json"
    path.write_text(json.dumps(request))
    return path


_CLIENT = []   # one app per worker process: a Service over the tiny VAE, warmed up once


def _client(seeds: Path):
    if not _CLIENT:
        from fastapi.testclient import TestClient

        import latentforge
        from latentforge.runtime.server import Service, create_app

        service = Service({"vae": latentforge.load(seeds / "vae.safetensors", backend="torch", threads=1)})
        service.warm_up()
        assert service.ready, service.startup_error
        _CLIENT.append(TestClient(create_app(service), raise_server_exceptions=False))
    return _CLIENT[0]


def _refused(status: int, body: bytes):
    from latentforge.errors import InputError

    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"HTTP {status} without a JSON error: {body[:200]!r}") from None
    raise InputError(f"HTTP {status}: {error}")


def load_request(path: Path) -> str:
    from urllib.parse import quote

    import httpx

    from latentforge.errors import InputError

    request = json.loads(path.read_text())
    client = _client(Path(request["seeds"]))
    if "ws" in request:
        return _session(client, request)
    body = base64.b64decode(request["body"]) if "body" in request else None
    try:
        response = client.request(request["method"], quote(request["path"], safe="/%?=&"),
                                  params=request.get("query"), headers=request.get("headers"), content=body,
                                  json=request.get("json") if body is None else None)
    except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError, ValueError) as e:
        # httpx will not send it (a header that is not latin-1, an unencodable URL): no server ever sees it
        raise InputError(f"the client cannot send this request: {type(e).__name__}") from None
    if response.status_code >= 500 and response.status_code != 503:
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:300]}")
    if response.status_code >= 400:
        _refused(response.status_code, response.content)
    return f"HTTP {response.status_code} {response.headers.get('content-type')} {len(response.content)} bytes"


def _answer(ws) -> dict | bytes:
    """The next answer that is not a stats message."""
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return {"type": "close", "code": message.get("code"), "reason": message.get("reason", "")}
        if message.get("bytes") is not None:
            return message["bytes"]
        answer = json.loads(message["text"])
        if answer.get("type") != "stats":
            return answer


def _session(client, request: dict) -> str:
    """Each frame is answered (a frame or an error) before the next is sent, so nothing is dropped; a control
    message is followed by a valid probe frame, whose answer comes after any error the control caused."""
    from urllib.parse import quote

    from starlette.websockets import WebSocketDisconnect

    from latentforge.errors import InputError

    try:
        ws = client.websocket_connect(quote(request["ws"], safe="/%?=&")).__enter__()
    except WebSocketDisconnect as e:   # the handshake refused: no such WebSocket route (HTTP 403/404)
        raise InputError(f"WebSocket refused with {e.code}") from None
    try:
        return _messages(ws, request)
    finally:
        ws.__exit__(None, None, None)


def _messages(ws, request: dict) -> str:
    from latentforge.errors import InputError

    probe = _png((8, 8))
    errors, frames = [], 0
    for message in request["messages"]:
        if "control" in message:
            ws.send_text(message["control"])
            ws.send_bytes(probe)
        else:
            ws.send_bytes(base64.b64decode(message["frame"]))
        while True:
            answer = _answer(ws)
            if isinstance(answer, bytes):
                frames += 1
                break
            if answer.get("type") == "close":
                if answer["code"] == 1011:
                    raise AssertionError(f"closed with 1011 (internal error): {answer['reason']}")
                raise InputError(f"closed with {answer['code']}: {answer['reason']}".splitlines()[0])
            if "internal error" in str(answer.get("error")):
                raise AssertionError(f"the stream reported an internal error: {answer}")
            errors.append(str(answer.get("error")))
            if "control" not in message:
                break
    if errors:
        raise InputError(f"{len(errors)} error answer(s), first: {errors[0]}")
    return f"{frames} frames"


def request_targets(target):
    """{name: target(...)} for tests/fuzz_targets.py, built with its Target class."""
    return {"tune_record": target(record_mutation, _write_record, ["tuned.onnx"], load=load_record),
            "request": target(request_mutation, _write_request,
                              [f"requests/{name}.json" for name in ("sample", "sample_npy", "decode", "decode_npy",
                                                                    "edit", "models", "filter")], load=load_request)}
