"""JSON errors for every failure of the HTTP API: one line naming the problem and the fix, never a path or a
traceback (an unexpected error is logged and answered with a fixed message)."""
from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from latentforge.errors import InputError

from .guards import BodyTooLarge
from .service import Busy, Draining, Service

log = logging.getLogger("latentforge.serve")


class UnknownModel(Exception):
    """A request named a model this server does not serve."""


def error_response(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def add_error_handlers(app: FastAPI, service: Service) -> None:
    @app.exception_handler(InputError)
    async def bad_input(request, e):
        return error_response(400, str(e).splitlines()[0])

    @app.exception_handler(UnknownModel)
    async def unknown(request, e):
        return error_response(404, f"no model named {e.args[0]!r} is served here; GET /v1/models lists the names "
                                   f"({', '.join(sorted(service.models))})")

    @app.exception_handler(Busy)
    async def busy(request, e):
        return error_response(503, f"server is at its limit of {service.limits.max_queue} requests in progress; "
                           "retry after a second", **{"Retry-After": "1"})

    @app.exception_handler(Draining)
    async def draining(request, e):
        state = "shutting down" if service.draining else "still warming up"
        return error_response(503, f"server is {state} and takes no new work; retry shortly or use another replica",
                      **{"Retry-After": "1"})

    @app.exception_handler(BodyTooLarge)
    async def too_large(request, e):
        return error_response(413, str(e))

    @app.exception_handler(HTTPException)
    async def httperror_response(request, e):
        return error_response(e.status_code, str(e.detail), **(e.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e):
        return error_response(422, "request does not match the route; see the server's README for each route's fields")

    @app.exception_handler(Exception)
    async def internal(request, e):
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, "internal error while serving this request; the server log has the details")
