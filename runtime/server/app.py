"""The HTTP API over a Service: `create_app(service)` gives a FastAPI app that uvicorn (runtime/server/run.py)
or a Ray Serve deployment (`serve.ingress(app)`) can run as it is.

    GET  /v1/models                      the served models
    POST /v1/models/{name}/sample        {"n", "seed", "temperature"[, "top_k"]} -> PNG grid or .npy
    POST /v1/models/{name}/decode        .npy float32 [N, D] or {"z": [[...]]} -> PNG grid or .npy
    POST /v1/models/{name}/edit          multipart: image (PNG/JPEG), edits (JSON) -> PNG
    WS   /v1/models/{name}/filter        runtime/server/stream.py
    GET  /healthz /readyz /metrics

Every error is JSON {"error": "..."} naming the problem and the fix; no path or traceback is ever sent.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import numbers

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from latentforge.directions import edit_offset
from latentforge.errors import InputError
from latentforge.images import grid
from latentforge.latents import interpolate, latents

from .codecs import NPY, decode_image, decode_npy, encode_image, encode_npy
from .errors import UnknownModel, add_error_handlers, error_response
from .guards import BearerToken, BodyLimit, RequestMetrics
from .service import Service
from .stream import add_filter_route

log = logging.getLogger("latentforge.serve")


def create_app(service: Service, token: str | None = None, cors_origins: list[str] | None = None) -> FastAPI:
    app = FastAPI(title="latentforge", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    add_error_handlers(app, service)
    _add_routes(app, service)
    add_filter_route(app, service)
    _add_page(app)
    # added last = outermost: metrics see every answer, the token is checked before the body is read
    app.add_middleware(BodyLimit, max_body=service.limits.max_body)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Accept"])
    if token:
        app.add_middleware(BearerToken, token=token)
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    return app


PAGE = {"/": ("index.html", "text/html"), "/static/app.js": ("app.js", "text/javascript"),
        "/static/style.css": ("style.css", "text/css")}


def _add_page(app: FastAPI) -> None:
    """The web page at /: three package files, read once here, so serving it never touches the disk."""
    from importlib.resources import files

    static = files("latentforge.runtime.server") / "static"
    for route, (name, media_type) in PAGE.items():
        content = (static / name).read_bytes()
        app.add_api_route(route, lambda content=content, media_type=media_type: Response(content, media_type=media_type),
                          methods=["GET"], include_in_schema=False)


async def _json_body(request: Request) -> dict:
    data = await request.body()
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        raise InputError("body is not valid JSON; send e.g. {\"n\": 4, \"seed\": 7}") from None
    if not isinstance(body, dict):
        raise InputError(f"body must be a JSON object, got {type(body).__name__}")
    return body


def _int(body: dict, key: str, default, lo: int, hi: int | None = None):
    value = body.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bound = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise InputError(f"{key} must be an integer {bound}, got {value!r}")
    return value


def _temperature(body: dict) -> float:
    value = body.get("temperature", 1.0)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise InputError(f"temperature must be a finite number >= 0, got {value!r}")
    return float(value)


def _moved(z: np.ndarray, body: dict, model, temperature: float) -> np.ndarray:
    """The page's explorer: `walk` {"to_seed": s, "t": 0..1} slerps each row toward the latents of another seed
    (t in steps of 1/100), then `edits` {"smile": 1.5} adds sum(amount * direction)."""
    walk = body.get("walk")
    if walk is not None:
        if not isinstance(walk, dict):
            raise InputError(f'walk must be an object like {{"to_seed": 9, "t": 0.5}}, got {walk!r}')
        to_seed = _int(walk, "to_seed", None, 0)
        t = walk.get("t")
        if to_seed is None or isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 <= t <= 1:
            raise InputError(f'walk needs an integer to_seed >= 0 and t from 0 to 1, got {walk!r}')
        end = latents(len(z), model.latent_dim, to_seed, temperature)
        z = np.stack([interpolate(a, b, 101)[round(t * 100)] for a, b in zip(z, end)])
    edits = body.get("edits", {})
    if not isinstance(edits, dict):
        raise InputError(f'edits must be an object like {{"eyes_open": 1.5}}, got {edits!r}')
    return (z + edit_offset(model.attributes, edits, model.latent_dim)).astype(np.float32)


def _images_response(request: Request, images: np.ndarray, point_model: bool = False) -> Response:
    if NPY in request.headers.get("accept", ""):
        return Response(encode_npy(images), media_type=NPY)
    if point_model:
        raise InputError(f"a point model gives float32 points, not images; send 'Accept: {NPY}'")
    return Response(encode_image(grid(images) if len(images) > 1 else images[0]), media_type="image/png")


async def _respond(request: Request, images: np.ndarray, point_model: bool = False) -> Response:
    """.npy is a header and a copy: answered on the event loop; PNG compression goes to a worker thread."""
    if NPY in request.headers.get("accept", ""):
        return _images_response(request, images, point_model)
    return await run_in_threadpool(_images_response, request, images, point_model)


def _add_routes(app: FastAPI, service: Service) -> None:
    limits = service.limits

    def lookup(name: str):
        try:
            return service.get(name)
        except KeyError:
            raise UnknownModel(name) from None

    @app.get("/healthz")
    async def healthz():
        return {"alive": True}

    @app.get("/readyz")
    async def readyz():
        if service.ready and not service.draining:
            return {"ready": True}
        if service.startup_error:
            return error_response(503, f"a model failed its start-up check: {service.startup_error}")
        return error_response(503, "shutting down" if service.draining else "warming up and checking the models; retry shortly")

    @app.get("/metrics")
    async def metrics():
        return Response(service.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"models": [served.describe() for served in service.models.values()]}

    @app.post("/v1/models/{name}/sample")
    async def sample(name: str, request: Request):
        served = lookup(name)
        model = served.model
        body = await _json_body(request)
        n = _int(body, "n", 1, 1, limits.max_n)
        seed = _int(body, "seed", None, 0)
        temperature = _temperature(body)
        extra = {}
        if ("edits" in body or "walk" in body) and served.decoder is None:
            raise InputError(f"edits and walk move latent vectors; {name!r} does not decode latent vectors")
        if "top_k" in body:
            if not model.codebook_size:
                raise InputError(f"top_k applies to VQ priors (code sampling); {name!r} is a {model.kind}")
            extra["top_k"] = _int(body, "top_k", None, 1)
        with service.admit():
            if served.decoder is not None:  # the same latents model.sample draws, through the shared batcher
                z = _moved(latents(n, model.latent_dim, seed, temperature), body, model, temperature)
                images = await asyncio.wrap_future(served.decoder.submit(z))
            else:
                images = await run_in_threadpool(lambda: model.sample(n, seed=seed, temperature=temperature, **extra))
            return await _respond(request, images, bool(model.point_dim))

    @app.post("/v1/models/{name}/decode")
    async def decode(name: str, request: Request):
        served = lookup(name)
        if served.decoder is None:
            raise InputError(f"{name!r} does not decode latent vectors (a filter graph, a point or a VQ model); "
                             "use /sample or /filter")
        if NPY in request.headers.get("content-type", ""):
            z = decode_npy(await request.body())
        else:
            rows = (await _json_body(request)).get("z")
            try:
                z = np.asarray(rows, dtype=np.float32)
            except (TypeError, ValueError):
                raise InputError(f"z must be a list of rows of {served.model.latent_dim} numbers, "
                                 "e.g. {\"z\": [[0.1, ...]]}") from None
        if z.ndim == 2 and len(z) > limits.max_n:
            raise InputError(f"{len(z)} latents is over this server's limit of {limits.max_n} per request; "
                             "send fewer rows per request")
        with service.admit():  # the model checks width, dtype and NaN; the batcher reruns a bad request alone
            images = await asyncio.wrap_future(served.decoder.submit(z))
            return await _respond(request, images)

    @app.post("/v1/models/{name}/edit")
    async def edit(name: str, request: Request):
        served = lookup(name)
        if not served.describe()["can_edit"]:
            raise InputError(f"{name!r} has no encoder, so it cannot edit images; serve a VAE or gan-encoder checkpoint")
        form = await request.form(max_files=1, max_fields=2)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise InputError("send multipart/form-data with an 'image' file (PNG or JPEG) and an 'edits' field")
        try:
            edits = json.loads(form.get("edits") or "{}")
        except ValueError:
            raise InputError("edits must be JSON like {\"eyes_open\": 1.5}") from None
        if not isinstance(edits, dict):
            raise InputError(f"edits must be a JSON object like {{\"eyes_open\": 1.5}}, got {edits!r}")
        data = await upload.read()
        with service.admit():
            def work() -> bytes:
                from ..filter import Filter

                frame = decode_image(data, limits.max_pixels)
                return encode_image(Filter(served.model, edits=edits, temperature=0.0,
                                           use_graph=served.graph is not None)(frame))

            return Response(await run_in_threadpool(work), media_type="image/png")
