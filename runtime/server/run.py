"""Run a Service under uvicorn, with the lifecycle a public endpoint needs.

Start: the port opens at once; /readyz says 503 until every model is warmed up and checked (in a thread).
SIGTERM or SIGINT: /readyz turns 503 and new work is refused at once; open filter streams are closed with
1001 (going away; uvicorn alone would send 1012); requests in flight finish; the process exits 0.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading

import uvicorn

from latentforge.errors import InputError

from .app import create_app
from .service import Service
from .stream import close_streams

DRAIN_SECONDS = 8  # in-flight requests get this long after SIGTERM; the whole exit stays under 10 s


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Anything beyond this machine needs a token: refuse to start otherwise, in one line."""
    if not is_loopback(host) and not token:
        raise InputError(f"binding {host} exposes the server beyond this machine; pass --token TOKEN (clients "
                         "then send 'Authorization: Bearer TOKEN'), or bind 127.0.0.1")


class _DrainingServer(uvicorn.Server):
    """uvicorn's Server with our drain in front of its own shutdown."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig, frame) -> None:
        if self.service.draining:  # a second signal: uvicorn's own handling (a second Ctrl-C forces)
            return super().handle_exit(sig, frame)
        self.service.draining = True
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain(sig, frame)))

    async def _drain(self, sig, frame) -> None:
        await close_streams(self.service)
        # not super().handle_exit: uvicorn would re-raise the signal after shutdown, and a drained exit is 0
        self.should_exit = True


def build_server(service: Service, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 cors_origins: list[str] | None = None, log_level: str = "info") -> uvicorn.Server:
    """The uvicorn server for `service`; `.run()` serves until SIGTERM/SIGINT (or `.handle_exit`, from any
    thread)."""
    check_bind(host, token)
    app = create_app(service, token=token, cors_origins=cors_origins)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, ws="auto",
                            ws_max_size=service.limits.max_message, timeout_graceful_shutdown=DRAIN_SECONDS,
                            lifespan="off", server_header=False)
    logging.getLogger("latentforge.serve").setLevel(log_level.upper())
    return _DrainingServer(config, service)


def serve(service: Service, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          cors_origins: list[str] | None = None, log_level: str = "info") -> None:
    """Serve until SIGTERM or Ctrl-C: the port opens at once, the models warm up behind /readyz."""
    server = build_server(service, host, port, token, cors_origins, log_level)
    threading.Thread(target=service.warm_up, name="latentforge-warm-up", daemon=True).start()
    try:
        server.run()
    finally:
        service.close()
