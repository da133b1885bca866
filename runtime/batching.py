"""A micro-batcher: concurrent single requests gathered into one batched call for throughput.

A worker thread waits for the first request, then up to `max_wait_ms` more for others, until
`max_batch` rows are gathered; one call of `fn` on the concatenation serves them all, and each
caller gets its own rows back. If the batched call raises, each request is re-run alone so the
error reaches only the caller whose input caused it. Closing drains what was submitted first.

    batcher = MicroBatcher(model.decode, max_batch=32, max_wait_ms=2)
    images = batcher(z)          # from any number of threads; z is [k, D] with k >= 1
    batcher.close()
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

from latentforge.errors import InputError

_STOP = object()


class MicroBatcher:
    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_batch: int = 32, max_wait_ms: float = 2.0) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InputError(f"max_batch must be a positive integer, got {max_batch!r}")
        if not max_wait_ms >= 0:
            raise InputError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.batches = 0          # calls of fn that served gathered requests
        self.requests = 0         # requests served
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._carry = None  # a request that did not fit the last batch
        self._lock = threading.Lock()  # orders submit() against close(), so nothing slips in after the stop mark
        self._worker = threading.Thread(target=self._loop, name="latentforge-batcher", daemon=True)
        self._worker.start()

    def submit(self, x) -> Future:
        """Queue rows x [k, ...] (k >= 1); the Future gives fn's rows for them."""
        arr = np.asarray(x)
        if arr.ndim < 1 or len(arr) == 0:
            raise InputError(f"a batched request needs at least one row [k, ...], got shape {list(arr.shape)}")
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise InputError("this MicroBatcher is closed; make a new one")
            self._queue.put((arr, future))
        return future

    @property
    def pending(self) -> int:
        """Requests queued and not yet taken into a batch (approximate while others submit)."""
        return self._queue.qsize()

    def __call__(self, x) -> np.ndarray:
        return self.submit(x).result()

    def close(self) -> None:
        """Stop accepting requests, serve the ones already queued, and join the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._worker.join()

    def __enter__(self) -> "MicroBatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _gather(self, first) -> tuple[list, bool]:
        """`first` plus whatever arrives within max_wait, up to max_batch rows; and whether the stop mark came."""
        pending, rows = [first], len(first[0])
        deadline = time.perf_counter() + self.max_wait
        while rows < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if item is _STOP:
                return pending, True
            if rows + len(item[0]) > self.max_batch:
                self._carry = item  # would overflow this batch: it opens the next one, in arrival order
                break
            pending.append(item)
            rows += len(item[0])
        return pending, False

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            item, self._carry = self._carry or self._queue.get(), None
            if item is _STOP:
                break
            pending, stopping = self._gather(item)
            self._serve(pending)
        if self._carry is not None:
            self._serve([self._carry])
        while True:  # close() came: requests queued before it still get served
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                self._serve([item])

    def _serve(self, pending: list) -> None:
        live = [(x, f) for x, f in pending if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            out = np.asarray(self.fn(live[0][0] if len(live) == 1 else np.concatenate([x for x, _ in live])))
        except BaseException as e:
            if len(live) == 1:
                live[0][1].set_exception(e)
            else:  # find whose input failed: each alone, so good requests still get their results
                for x, f in live:
                    self._serve_alone(x, f)
            return
        self.batches += 1
        self.requests += len(live)
        start = 0
        for x, f in live:
            f.set_result(out[start:start + len(x)])
            start += len(x)

    def _serve_alone(self, x, future: Future) -> None:
        try:
            future.set_result(np.asarray(self.fn(x)))
        except BaseException as e:
            future.set_exception(e)
        else:
            self.batches += 1
            self.requests += 1
