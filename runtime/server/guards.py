"""ASGI middleware in front of every route: the bearer token, the request-body limit and the per-route
metrics. Written against plain ASGI so they see WebSocket handshakes too and cost one function call."""
from __future__ import annotations

import hmac
import json
import time
from urllib.parse import parse_qs


class BodyTooLarge(Exception):
    """Raised from inside `receive` when a body grows past the limit; the app answers 413."""


async def send_json(send, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """413 for a declared Content-Length over the limit before reading a byte, and for a chunked body as soon
    as it grows past it."""

    def __init__(self, app, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await send_json(send, 413, f"request body of {declared.decode(errors='replace')} bytes is over "
                                              f"this server's limit of {self.max_body}; send less per request")
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise BodyTooLarge(f"request body is over this server's limit of {self.max_body} bytes; "
                                   "send less per request")
            return message

        await self.app(scope, limited, send)


class BearerToken:
    """Every /v1 route and the WebSocket need `Authorization: Bearer TOKEN` (a browser's WebSocket cannot set
    headers, so there `?token=TOKEN` is accepted too). Compared in constant time."""

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _allowed(self, scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        given = header[7:] if header[:7].lower() == b"bearer " else b""
        if not given and scope["type"] == "websocket":
            given = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0].encode()
        return hmac.compare_digest(given, self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or not _route_path(scope).startswith("/v1") \
                or self._allowed(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008, "reason": "bearer token required"})
        await send_json(send, 401, "missing or wrong bearer token; send the header 'Authorization: Bearer TOKEN' "
                                   "with the token the server was started with",
                        headers=[(b"www-authenticate", b"Bearer")])


def _route_path(scope) -> str:
    """The path below the app's mount point: under a prefix (a Ray Serve route_prefix, a proxy's root_path)
    ASGI's `path` still starts with that prefix."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class RequestMetrics:
    """Counts each HTTP request by route template (never the raw path, so a scan of random URLs cannot grow
    the metric without bound) and status, and times it."""

    def __init__(self, app, metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def recording(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
