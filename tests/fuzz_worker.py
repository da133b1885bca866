"""Runs fuzz cases in a subprocess, so a crash of a native parser (onnxruntime, PyAV, Pillow, safetensors) or a
hang is seen as such instead of taking the test run down with it.

The parent holds a `Worker`; `Worker.run(target, path)` sends one case and returns its outcome:
"ok" (loaded), "refused" (a latentforge.errors exception), "other" (any other exception), "crash" (the worker
died; it is restarted for the next case), "hang" (no answer within the bound; killed) or "memory" (the
worker's peak resident memory grew by more than MEMORY_MB while loading it).
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

MEMORY_MB = 1024


class Worker:
    def __init__(self, timeout: float = 30.0, log: Path | None = None) -> None:
        self.timeout, self.log, self.proc = timeout, log, None

    def _start(self) -> None:
        stderr = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr, text=True, cwd=Path(__file__).parent)
        if self.log:
            stderr.close()
        if self._answer(300) is None:   # imports torch, onnxruntime and PyAV once
            raise RuntimeError(f"the fuzz worker did not start; see {self.log}")

    def _answer(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def run(self, target: str, path: Path) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write(json.dumps({"target": target, "path": str(path)}) + "\n")
            self.proc.stdin.flush()
            answer = self._answer(self.timeout)
        except BrokenPipeError:
            answer = None
        if answer is None:
            hung = self.proc.poll() is None
            self.close()
            outcome = "hang" if hung else "crash"
            return {"outcome": outcome, "type": "", "message": f"the worker {'hung' if hung else 'died'}"}
        return answer

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


def run_case(worker: Worker, target: str, seeds: Path, case: Path, seed: str, mutations: list) -> dict:
    """Write one case into the empty folder `case`, load it in the worker, and judge it: the outcome, plus
    "problem" (None when the case ended as it must) and "written" (files that appeared while loading)."""
    from fuzz_targets import TARGETS

    case.mkdir()
    path = TARGETS[target].write(seeds / seed, case, mutations)
    before = set(case.rglob("*"))
    answer = worker.run(target, path)
    answer["written"] = sorted(str(p.relative_to(case)) for p in set(case.rglob("*")) - before)
    problem = None
    if answer["outcome"] not in ("ok", "refused"):
        problem = f"{answer['outcome']}: {answer['type']} {answer['message']}"
    elif answer["outcome"] == "refused" and (not answer["message"].strip() or len(answer["message"].splitlines()) != 1):
        problem = f"refused without a one-line message: {answer['message']!r}"
    elif answer["written"]:
        problem = f"wrote {answer['written']}"
    elif answer["outcome"] == "ok" and TARGETS[target].must_refuse(seed, mutations):
        problem = f"loaded, but must be refused: {answer['message']}"
    answer["problem"] = problem
    return answer


def peak_rss_mb() -> float:
    """This process's own peak resident memory: VmHWM, since ru_maxrss keeps the parent's peak across exec."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve() -> None:
    """The worker: one JSON case per line in, one JSON outcome per line out (on a private copy of stdout)."""
    import warnings

    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)   # anything a library prints goes to the log, not into the answers
    warnings.simplefilter("ignore")
    import av  # noqa: F401  (import the native libraries before the first case, so its time is not a hang)
    import onnxruntime  # noqa: F401
    import torch

    import fuzz_targets
    from latentforge.errors import LatentforgeError

    torch.set_num_threads(1)
    answers.write("{}\n")
    answers.flush()
    for line in sys.stdin:
        case = json.loads(line)
        before = peak_rss_mb()
        try:
            answer = {"outcome": "ok", "type": "", "message": fuzz_targets.load(case["target"], Path(case["path"]))}
        except LatentforgeError as e:
            answer = {"outcome": "refused", "type": type(e).__name__, "message": str(e)}
        except BaseException as e:  # a finding; BaseException too: pyo3's PanicException (a Rust panic) is one
            answer = {"outcome": "other", "type": type(e).__name__, "message": repr(e)[:500]}
        peak = answer["rss_mb"] = peak_rss_mb()
        if peak - before > MEMORY_MB:
            answer = {**answer, "outcome": "memory", "message": f"peak memory grew by {peak - before:.0f} MB"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve()
