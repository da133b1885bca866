"""`latentforge serve --ray`: the same FastAPI app (runtime/server/app.py) behind Ray Serve's FastAPI ingress.

    from latentforge.runtime.server.ray_app import application
    app = application({"faces_vae": "/models/faces_vae.onnx"}, Limits(max_batch=16), replicas=2)
    serve.run(app, route_prefix="/")          # or compose `app` into your own Serve application

Each replica loads the models itself (from paths every node can read), warms them up through the batched path
and only then builds the app over its own Service, through `__serve_build_asgi_app__`: the routes, errors,
guards and WebSocket filter are create_app's, unchanged.

Batching on Ray is @serve.batch in place of the thread MicroBatcher, not around it: one queue per model and
route on the replica's event loop, so a request waits at most once (--max-wait-ms) and Serve's batch metrics
count the real batches. Sizes are counted in rows (batch_size_fn), as MicroBatcher counts them.
"""
from __future__ import annotations

import asyncio
import signal
from concurrent.futures import Future
from functools import partial
from pathlib import Path

import numpy as np
from ray import serve

from latentforge.errors import InputError

from .app import create_app
from .service import Limits, Service

APP_NAME = "latentforge"


class _Failed:
    """A row set whose model call raised: handed back through @serve.batch (which would fail the whole batch
    on a raise) and raised again for its own caller only."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class ServeBatcher:
    """MicroBatcher's surface (submit, __call__, close) on @serve.batch, on the replica's event loop.

    A batch that raises is re-run request by request, so a bad input fails only its own caller; a request with
    more rows than max_batch runs alone, as MicroBatcher runs it."""

    def __init__(self, fn, max_batch: int, max_wait_ms: float, loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self.batches = 0
        self.requests = 0
        self._loop = loop
        self._closed = False

        async def run_batch(items: list) -> list:  # a closure, so each batcher has its own Serve queue
            return await asyncio.to_thread(self._serve, items)

        self._batched = serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=max_wait_ms / 1000.0,
                                    batch_size_fn=lambda items: sum(len(x) for x in items))(run_batch)

    def submit(self, x) -> Future:
        arr = np.asarray(x)
        if arr.ndim < 1 or len(arr) == 0:
            raise InputError(f"a batched request needs at least one row [k, ...], got shape {list(arr.shape)}")
        if self._closed:
            raise InputError("this batcher is closed; the replica is shutting down")
        return asyncio.run_coroutine_threadsafe(self._one(arr), self._loop)

    def __call__(self, x) -> np.ndarray:
        """From a thread other than the event loop's (the warm-up check)."""
        return self.submit(x).result()

    def close(self) -> None:
        self._closed = True

    async def _one(self, x: np.ndarray) -> np.ndarray:
        if len(x) > self.max_batch:
            out = (await asyncio.to_thread(self._serve, [x]))[0]
        else:
            out = await self._batched(x)
        if isinstance(out, _Failed):
            raise out.error
        return out

    def _serve(self, items: list) -> list:
        try:
            out = np.asarray(self.fn(items[0] if len(items) == 1 else np.concatenate(items)))
        except Exception as e:
            return [_Failed(e)] if len(items) == 1 else [self._serve([x])[0] for x in items]
        self.batches += 1
        self.requests += len(items)
        bounds = np.cumsum([0] + [len(x) for x in items])
        return [out[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@serve.deployment(name="latentforge")
@serve.ingress()
class LatentforgeDeployment:
    """One replica: the models loaded from `paths` ({served name: file}), warmed up, then create_app over them."""

    async def __init__(self, paths: dict[str, str], limits: Limits, load_options: dict, token: str | None,
                       cors_origins: list[str] | None) -> None:
        from latentforge import load

        models = {name: await asyncio.to_thread(load, path, **load_options) for name, path in paths.items()}
        batcher = partial(ServeBatcher, loop=asyncio.get_running_loop())
        self.service = Service(models, limits, batcher=batcher)
        await asyncio.to_thread(self.service.warm_up)  # the check runs through ServeBatcher, off the loop
        if not self.service.ready:  # Serve reports the replica as failed to start, with this line
            raise InputError(f"a model failed its start-up check: {self.service.startup_error}")
        self.token = token
        self.cors_origins = cors_origins

    def __serve_build_asgi_app__(self):
        return create_app(self.service, token=self.token, cors_origins=self.cors_origins)

    def __del__(self) -> None:
        service = getattr(self, "service", None)
        if service is not None:
            service.close()


def application(paths: dict[str, str | Path], limits: Limits | None = None, *, replicas: int = 1,
                autoscale: tuple[int, int] | None = None, replica_cpus: float = 1.0, token: str | None = None,
                cors_origins: list[str] | None = None, **load_options):
    """The bound Serve application: pass it to serve.run, or bind it into your own application.

    `paths` maps served names to model files (absolute paths are sent, so each replica reads the same files);
    `autoscale` (min, max) replaces the fixed `replicas` count; `load_options` go to latentforge.load."""
    limits = limits or Limits()
    options = {"max_ongoing_requests": limits.max_queue + limits.max_streams,
               "ray_actor_options": {"num_cpus": replica_cpus}}
    if autoscale is not None:
        low, high = autoscale
        if not 0 <= low <= high or high < 1:
            raise InputError(f"autoscale needs 0 <= MIN <= MAX and MAX >= 1, got {low},{high}")
        # a replica counts as busy once a full batch of requests is in it, not at Serve's default of 2
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                         "target_ongoing_requests": limits.max_batch}
    else:
        options["num_replicas"] = replicas
    files = {name: str(Path(path).resolve()) for name, path in paths.items()}
    return LatentforgeDeployment.options(**options).bind(files, limits, load_options, token, cors_origins)


def _replica_error() -> str | None:
    """The last line of the failed replica's traceback, as the Serve controller recorded it."""
    try:
        deployments = serve.status().applications[APP_NAME].deployments
    except Exception:  # the controller is gone too: the caller falls back to Serve's own message
        return None
    lines = [line for d in deployments.values() for line in (d.message or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def run(app, host: str = "127.0.0.1", port: int = 8000, address: str | None = None) -> None:
    """Serve `app` until SIGTERM or Ctrl-C: on a local Ray instance started here, or on the cluster at
    `address`, where the application is deleted again on exit and the cluster keeps running."""
    import ray

    if address is None:
        ray.init(include_dashboard=False)
    else:
        ray.init(address=address)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM tears down like Ctrl-C
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:  # Serve's own message only says the deployment failed; the replica's says why
        raise InputError(f"Ray Serve could not start the replicas: {_replica_error() or e}") from None
    finally:
        if address is None:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
        ray.shutdown()
