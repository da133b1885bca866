"""`latentforge serve MODEL...`: the models as an HTTP and WebSocket service (runtime/server/)."""
from __future__ import annotations

from latentforge.errors import InputError

from .arguments import add_backend, add_precision, add_threads, positive_int


def cmd_serve(args) -> None:
    from latentforge import load
    from latentforge.runtime.server import Limits, Service, check_bind, serve, served_name

    check_bind(args.host, args.token)  # before minutes of loading, not after
    names = [served_name(path) for path in args.models]
    for name in names:
        if names.count(name) > 1:
            raise InputError(f"two models would both be served as {name!r} (the file stem); rename one")
    models = {name: load(path, backend=args.backend, precision=args.precision, threads=args.threads)
              for name, path in zip(names, args.models)}
    limits = Limits(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                    max_n=args.max_n, max_body=args.max_body_mb << 20)
    print(f"serving {', '.join(models)} on http://{args.host}:{args.port} (ready once /readyz says so)", flush=True)
    serve(Service(models, limits), host=args.host, port=args.port, token=args.token,
          cors_origins=args.cors_origin, log_level=args.log_level)


def _wait_ms(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1000.0:
        raise argparse.ArgumentTypeError(f"milliseconds from 0 to 1000, got {text!r}")
    return value


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="serve models over HTTP and WebSocket (sample, decode, edit, live filter)")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="checkpoint (.safetensors) or exported .onnx; served under its file stem")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback needs --token")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    add_backend(p)
    add_precision(p, "precision variant to run")
    add_threads(p, "runtime threads per model (default: one per physical core)")
    p.add_argument("--max-batch", type=positive_int, default=16, help="rows per micro-batch; default 16")
    p.add_argument("--max-wait-ms", type=_wait_ms, default=2.0, help="how long a batch waits to fill; default 2")
    p.add_argument("--max-queue", type=positive_int, default=64,
                   help="requests in progress at once; more get 503 with Retry-After; default 64")
    p.add_argument("--max-n", type=positive_int, default=64, help="images per request; default 64")
    p.add_argument("--max-body-mb", type=positive_int, default=8, help="request body limit in MiB; default 8")
    p.add_argument("--token", help="bearer token required on /v1 routes and the WebSocket")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="allow browser pages from this origin (repeatable); CORS is off without it")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_serve)
