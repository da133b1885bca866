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
    limits = Limits(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                    max_n=args.max_n, max_body=args.max_body_mb << 20)
    if args.ray:
        return _serve_on_ray(args, dict(zip(names, args.models)), limits)
    if args.replicas is not None or args.autoscale is not None or args.address is not None:
        raise InputError("--replicas, --autoscale and --address are Ray Serve options; add --ray")
    models = {name: load(path, backend=args.backend, precision=args.precision, threads=args.threads,
                         verify=not args.no_verify) for name, path in zip(names, args.models)}
    print(f"serving {', '.join(models)} on http://{args.host}:{args.port} (ready once /readyz says so)", flush=True)
    serve(Service(models, limits), host=args.host, port=args.port, token=args.token,
          cors_origins=args.cors_origin, log_level=args.log_level)


def _serve_on_ray(args, paths: dict, limits) -> None:
    """Each replica loads the files itself, so only their presence is checked here."""
    from pathlib import Path

    try:
        from latentforge.runtime.server import ray_app
    except ImportError:
        raise InputError("--ray needs Ray Serve: pip install 'latentforge[ray]'") from None
    for path in paths.values():
        if not Path(path).is_file():
            raise InputError(f"model file {path} does not exist; on a cluster it must exist on every node")
    app = ray_app.application(paths, limits, replicas=args.replicas or 1, autoscale=args.autoscale,
                              token=args.token, cors_origins=args.cors_origin, backend=args.backend,
                              precision=args.precision, threads=args.threads, verify=not args.no_verify)
    where = f"the Ray cluster at {args.address}" if args.address else "a local Ray instance"
    print(f"serving {', '.join(paths)} through Ray Serve on {where}, http://{args.host}:{args.port} "
          "(Ctrl-C stops)", flush=True)
    ray_app.run(app, host=args.host, port=args.port, address=args.address)


def _min_max(text: str) -> tuple[int, int]:
    import argparse

    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"MIN,MAX replica counts like 1,4, got {text!r}") from None
    if not 0 <= low <= high or high < 1:
        raise argparse.ArgumentTypeError(f"MIN,MAX needs 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return low, high


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
    p.add_argument("--no-verify", action="store_true",
                   help="serve an exported graph without first checking it reproduces its golden output "
                        "(files exported before latentforge wrote one)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    ray = p.add_argument_group("Ray Serve", "the same app deployed through Ray Serve (pip install 'latentforge[ray]')")
    ray.add_argument("--ray", action="store_true", help="deploy through Ray Serve instead of one uvicorn process")
    count = ray.add_mutually_exclusive_group()
    count.add_argument("--replicas", type=positive_int, help="fixed replica count, each holding every model; "
                       "default 1")
    count.add_argument("--autoscale", type=_min_max, metavar="MIN,MAX",
                       help="let Serve scale replicas between MIN and MAX by requests in flight")
    ray.add_argument("--address", help="join the Ray cluster at ADDR (e.g. ray://head:10001 or auto); "
                     "default: start a local Ray instance")
    p.set_defaults(func=cmd_serve)
