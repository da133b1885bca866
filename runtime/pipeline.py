"""Three overlapping stages for a frame stream, bounded queues between them, and live per-stage statistics.

capture thread: pulls frames from the source and preprocesses them; inference thread: runs the model;
the caller's thread (the generator): postprocesses and receives each output. With drop=True the hand-off
from capture to inference is a one-frame slot where the newest frame replaces an unprocessed one (a live
camera must never fall behind); otherwise a bounded queue applies back-pressure to the source.
"""
from __future__ import annotations

import collections
import queue
import threading
import time

import numpy as np

STAGES = ("pre", "infer", "post")
WINDOW = 2048  # recent latencies kept per stage for live percentiles
_END = object()


class FilterStats:
    """Counters and recent stage latencies; read them live from another thread (`snapshot()`) or at the end."""

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.skipped = 0
        self.started = time.perf_counter()
        self._times = {stage: collections.deque(maxlen=WINDOW) for stage in STAGES}

    def add(self, stage: str, seconds: float) -> None:
        self._times[stage].append(seconds)

    def snapshot(self) -> dict:
        elapsed = time.perf_counter() - self.started
        stages = {}
        for stage, times in self._times.items():
            ms = np.array(list(times)) * 1e3  # list() first: a deque may grow while numpy reads it
            stages[stage] = ({"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}
                             if len(ms) else {"p50_ms": None, "p99_ms": None, "n": 0})
        return {"frames_in": self.frames_in, "frames_out": self.frames_out, "dropped": self.dropped,
                "skipped": self.skipped, "seconds": elapsed, "fps": self.frames_out / elapsed if elapsed else 0.0,
                "stages": stages}

    def summary(self) -> str:
        s = self.snapshot()
        stages = ", ".join(f"{k} p50 {v['p50_ms']:.3f} ms p99 {v['p99_ms']:.3f} ms" for k, v in s["stages"].items()
                           if v["n"])
        return (f"{s['frames_out']} frames out of {s['frames_in']} in {s['seconds']:.2f} s ({s['fps']:.1f} fps); "
                f"dropped {s['dropped']}, skipped {s['skipped']} as similar; {stages}")


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class LatestSlot:
    """A one-item hand-off where put() replaces an unconsumed item (returning True); closing never drops one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._full = False
        self._closed = False

    def put(self, item) -> bool:
        with self._cond:
            replaced = self._full
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def get(self, timeout: float):
        """The item, _END once closed and empty, or None on timeout."""
        with self._cond:
            if not self._full and not self._closed:
                self._cond.wait(timeout)
            if self._full:
                item, self._item, self._full = self._item, None, False
                return item
            return _END if self._closed else None


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Blocking put that gives up when the pipeline stops; False if it gave up."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def run_pipeline(frames, preprocess, infer, postprocess, stats: FilterStats, drop: bool, queue_size: int):
    """Generator of postprocess(pre, infer(pre[0])) for each frame kept; see the module docstring."""
    stop = threading.Event()
    handoff = LatestSlot() if drop else queue.Queue(maxsize=queue_size)
    results: queue.Queue = queue.Queue(maxsize=queue_size)

    def capture() -> None:
        try:
            for frame in frames:
                if stop.is_set():
                    return
                item = preprocess(frame)
                if drop:
                    stats.dropped += handoff.put(item)
                elif not _put(handoff, item, stop):
                    return
        except BaseException as e:  # a bad frame or a broken source reaches the caller, in order
            item = _Failure(e)
            if drop:
                handoff.put(item)  # a failure ends the stream anyway; replacing a frame with it is right
            else:
                _put(handoff, item, stop)
            return
        if drop:
            handoff.close()
        else:
            _put(handoff, _END, stop)

    def inference() -> None:
        while not stop.is_set():
            item = handoff.get(0.05) if drop else _get(handoff)
            if item is None:
                continue
            if item is _END or isinstance(item, _Failure):
                _put(results, item, stop)
                return
            try:
                out = infer(item[0])
            except BaseException as e:
                _put(results, _Failure(e), stop)
                return
            if not _put(results, (item, out), stop):
                return

    threads = [threading.Thread(target=capture, name="latentforge-capture", daemon=True),
               threading.Thread(target=inference, name="latentforge-infer", daemon=True)]
    for t in threads:
        t.start()
    try:
        while True:
            item = results.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield postprocess(*item)
    finally:
        stop.set()  # the caller stopped early, failed or finished: let both threads leave
        for t in threads:
            t.join(timeout=1.0)


def _get(q: queue.Queue):
    try:
        return q.get(timeout=0.05)
    except queue.Empty:
        return None
