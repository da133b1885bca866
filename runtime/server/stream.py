"""The WebSocket filter, /v1/models/{name}/filter: encoded frames in, filtered JPEG (or PNG) frames out.

Client -> server: binary messages, one PNG or JPEG frame each (any size); text messages with JSON control,
{"edits": {"eyes_open": 1.5}, "temperature": 0.3}, applied from the next frame on. Server -> client: one
binary frame per processed frame, {"type": "stats", ...} at least once a second, {"type": "error", ...} for a
bad frame or control message (the stream stays open). `?format=png` asks for PNG frames.

Latest frame wins: a frame that arrives while the previous one still waits is replaced and counted as
dropped, so a fast client never builds a queue. Each stream has one frame in flight at most; the model step
of every stream goes through the model's one shared micro-batcher, so many streams fill one batch.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import time

import numpy as np
from fastapi import FastAPI, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from latentforge.errors import InputError

from .codecs import decode_image, encode_image

GOING_AWAY, UNSUPPORTED, POLICY, TOO_BIG, TRY_LATER = 1001, 1003, 1008, 1009, 1013
INLINE_BYTES = 128 * 128 * 3  # frames up to this size are decoded and encoded on the event loop
STATS_EVERY = 0.5  # seconds between stats messages: "at least once a second" with room for a busy loop
_ids = itertools.count(1)
log = logging.getLogger("latentforge.serve")


class Stream:
    def __init__(self, websocket: WebSocket, served, service, fmt: str) -> None:
        from ..filter import Filter

        self.ws = websocket
        self.served = served
        self.service = service
        self.fmt = fmt
        self.id = str(next(_ids))
        self.filter = Filter(served.model, use_graph=True)
        self.latest: tuple[bytes, float] | None = None
        self.arrived = asyncio.Event()
        self.send_lock = asyncio.Lock()
        self.closed = False
        self.frames_in = self.frames_out = self.dropped = 0
        self.latencies: collections.deque = collections.deque(maxlen=1024)

    async def send(self, message: dict) -> None:
        async with self.send_lock:
            if not self.closed:
                await self.ws.send(message)

    async def send_json(self, payload: dict) -> None:
        await self.send({"type": "websocket.send", "text": json.dumps(payload)})

    async def close(self, code: int, reason: str = "") -> None:
        async with self.send_lock:
            if not self.closed:
                self.closed = True
                try:
                    await self.ws.close(code, reason)
                except RuntimeError:  # the client had already gone
                    pass

    async def run(self) -> None:
        workers = [asyncio.create_task(self._process()), asyncio.create_task(self._report())]
        try:
            await self._receive()
        except WebSocketDisconnect:
            pass
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.closed = True

    async def _receive(self) -> None:
        limit = self.service.limits.max_message
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data, text = message.get("bytes"), message.get("text")
            if len(data or text or "") > limit:
                await self.close(TOO_BIG, f"message over {limit} bytes")
                continue
            if data is not None:
                self.frames_in += 1
                if self.latest is not None:
                    self.dropped += 1
                    self.service.metrics.frames.labels("dropped").inc()
                self.latest = (data, time.perf_counter())
                self.arrived.set()
            elif text is not None:
                await self._control(text)

    async def _control(self, text: str) -> None:
        try:
            control = json.loads(text)
            if not isinstance(control, dict) or set(control) - {"edits", "temperature"}:
                raise InputError('control messages are JSON like {"edits": {"eyes_open": 1.5}, "temperature": 0}')
            if "edits" in control:
                if not isinstance(control["edits"], dict):
                    raise InputError(f'edits must be an object like {{"eyes_open": 1.5}}, got {control["edits"]!r}')
                self.filter.set_edits(control["edits"])
            if "temperature" in control:
                self.filter.set_temperature(control["temperature"])
        except ValueError as e:  # InputError is a ValueError, and so is bad JSON
            message = str(e) if isinstance(e, InputError) else "control message is not valid JSON"
            await self.send_json({"type": "error", "error": message})

    async def _process(self) -> None:
        while True:
            await self.arrived.wait()
            self.arrived.clear()
            if self.latest is None:
                continue
            (data, received), self.latest = self.latest, None
            try:
                pre = await self._off_loop(len(data), self._preprocess, data)
                rows = self.served.frame_rows(1)
                rows["frame"][0] = pre[0]
                rows["offset"][0], rows["eps"][0] = (a[0] for a in self.filter.step_inputs())
                out = await asyncio.wrap_future(self.served.frames.submit(rows))
                encoded = await self._off_loop(pre[1].size, self._postprocess, pre, out[0])
            except InputError as e:
                await self.send_json({"type": "error", "error": str(e)})
                continue
            except Exception:  # the stream goes on; the log has the details, the client never a traceback
                log.exception("filter stream %s: frame failed", self.id)
                await self.send_json({"type": "error", "error": "internal error on this frame; see the server log"})
                continue
            await self.send({"type": "websocket.send", "bytes": encoded})
            self.frames_out += 1
            self.latencies.append(time.perf_counter() - received)
            self.service.metrics.frames.labels("out").inc()

    @staticmethod
    async def _off_loop(size: int, fn, *args):
        """fn(*args) on a worker thread for a large frame; inline for a small one, where the hop to a thread
        and back costs more than the work (about 0.1 ms to decode or encode a 64 px frame)."""
        if size <= INLINE_BYTES:
            return fn(*args)
        return await run_in_threadpool(fn, *args)

    def _preprocess(self, data: bytes):
        return self.filter.preprocess(decode_image(data, self.service.limits.max_pixels))

    def _postprocess(self, pre, out: np.ndarray) -> bytes:
        return encode_image(self.filter.postprocess(pre, out), self.fmt)

    async def _report(self) -> None:
        last_time, last_out = time.perf_counter(), 0
        while True:
            await asyncio.sleep(STATS_EVERY)
            now = time.perf_counter()
            fps = (self.frames_out - last_out) / (now - last_time)
            last_time, last_out = now, self.frames_out
            ms = np.array(self.latencies) * 1e3
            self.service.metrics.stream_fps.labels(self.id).set(fps)
            await self.send_json({"type": "stats", "fps": round(fps, 2), "frames_in": self.frames_in,
                                  "frames_out": self.frames_out, "dropped": self.dropped,
                                  "p50_ms": round(float(np.median(ms)), 3) if len(ms) else None,
                                  "p99_ms": round(float(np.percentile(ms, 99)), 3) if len(ms) else None})


async def close_streams(service, code: int = GOING_AWAY) -> None:
    """Close every open stream (on SIGTERM: 1001, going away)."""
    await asyncio.gather(*(stream.close(code, "server shutting down") for stream in list(service.streams)),
                         return_exceptions=True)


def add_filter_route(app: FastAPI, service) -> None:
    @app.websocket("/v1/models/{name}/filter")
    async def filter_stream(websocket: WebSocket, name: str):
        await websocket.accept()
        served = service.models.get(name)
        fmt = "PNG" if websocket.query_params.get("format", "jpeg").lower() == "png" else "JPEG"
        if served is None:
            reason = (POLICY, f"no model named {name!r} is served here; GET /v1/models lists the names")
        elif served.frames is None:
            reason = (UNSUPPORTED, f"{name!r} cannot filter frames (it has no encoder); serve a VAE or gan-encoder checkpoint "
                                   "or its exported filter graph")
        elif not service.ready or service.draining:
            reason = (TRY_LATER, "server is warming up or shutting down; retry shortly")
        elif len(service.streams) >= service.limits.max_streams:
            reason = (TRY_LATER, f"server is at its limit of {service.limits.max_streams} streams; retry later")
        else:
            reason = None
        if reason is not None:
            await websocket.send_text(json.dumps({"type": "error", "error": reason[1]}))
            await websocket.close(reason[0])
            return
        stream = Stream(websocket, served, service, fmt)
        service.streams.add(stream)
        service.metrics.streams.inc()
        try:
            await stream.run()
        finally:
            service.streams.discard(stream)
            service.metrics.streams.dec()
            try:
                service.metrics.stream_fps.remove(stream.id)
            except KeyError:  # closed before its first stats message
                pass
