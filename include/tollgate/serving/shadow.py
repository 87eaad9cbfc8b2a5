"""Shadow mirroring off the response path: a bounded queue into a separate worker process.

The request path calls ``offer`` after its response is built: ``put_nowait`` of the raw request (a few
hundred bytes, pickled by the queue's feeder thread) or, when the queue is full, the item is dropped and
counted (logged without a shadow output), never blocking the user. The challenger predicts in its own
process, so its work does not hold the router's GIL. It loads the challenger from the files the router
verified (the verified cache), checks the input against the challenger's own signature and predicts; a
reader thread joins each result to the request's prediction-log row by request id, so served and shadow
outputs sit in one row.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_STOP = "__stop__"


def _worker(requests: Any, results: Any) -> None:
    """The shadow process: load each challenger once (by its verified path), predict, send results back.

    It ignores SIGTERM and SIGINT (a signal to the router's process group reaches it too): the router
    stops it after draining, so queued shadow work is finished and logged."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # sharing a core, the router's requests go first (and its start-up)
        os.nice(10)
    import mlflow.pyfunc

    from tollgate.serving.inputs import InputSpec
    from tollgate.serving.outputs import to_jsonable

    loaded: dict[str, tuple[Any, InputSpec]] = {}
    while True:
        item = requests.get()
        if item == _STOP:
            results.put(_STOP)
            return
        request_id, path, kind, payload = item
        start = time.perf_counter()
        try:
            if path not in loaded:
                pyfunc = mlflow.pyfunc.load_model(path)
                loaded.clear()  # one challenger at a time
                loaded[path] = (pyfunc, InputSpec.from_pyfunc(pyfunc))
            pyfunc, spec = loaded[path]
            model_input = spec.from_rows(payload) if kind == "rows" else spec.from_v2(payload)
            output, status = json.dumps(to_jsonable(pyfunc.predict(model_input))), "ok"
        except Exception as err:  # a failing challenger is evidence, never a crash
            output, status = None, f"error: {type(err).__name__}: {err}"[:500]
        results.put((request_id, output, status, (time.perf_counter() - start) * 1000))


class ShadowMirror:
    def __init__(self, size: int, log_row: Callable[[dict[str, Any]], None], metrics: Any):
        context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads or locks
        self._requests = context.Queue(maxsize=size)
        self._results = context.Queue()
        self._process = context.Process(
            target=_worker, args=(self._requests, self._results), name="tollgate-shadow", daemon=True
        )
        self._log_row = log_row
        self._metrics = metrics
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="shadow-results", daemon=True)
        self.dropped = 0
        self._paths: set[str] = set()  # the model copies queued work was sent for (kept while pending)

    def start(self) -> None:
        self._process.start()
        self._reader.start()

    @property
    def depth(self) -> int:
        return len(self._pending)

    def offer(self, challenger: Any, kind: str, payload: Any, row: dict[str, Any]) -> bool:
        """Queue one shadow prediction; False (row logged as dropped) when the queue is full."""
        row["shadow_version"] = challenger.version
        path = str(challenger.path)
        with self._lock:
            self._paths.add(path)
            self._pending[row["request_id"]] = row
        try:
            self._requests.put_nowait((row["request_id"], path, kind, payload))
        except queue.Full:
            with self._lock:
                self._pending.pop(row["request_id"], None)
            self.dropped += 1
            self._metrics.shadow_dropped.inc()
            row["shadow_status"] = "dropped"
            self._log_row(row)
            return False
        self._metrics.shadow_depth.set(self.depth)
        return True

    def paths_in_flight(self) -> set[Path]:
        """The model copies the worker may still load for pending work (none once nothing is pending)."""
        with self._lock:
            if not self._pending:
                self._paths.clear()
            return {Path(p) for p in self._paths}

    def _read(self) -> None:
        while True:
            item = self._results.get()
            if item == _STOP:
                return
            request_id, output, status, latency_ms = item
            with self._lock:
                row = self._pending.pop(request_id, None)
            if row is None:
                continue
            row.update(shadow_output=output, shadow_status=status, shadow_latency_ms=latency_ms)
            self._metrics.shadow_done.labels(status="ok" if status == "ok" else "error").inc()
            self._metrics.shadow_depth.set(self.depth)
            self._log_row(row)

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued (drain), stop the worker; rows it never answered are logged as lost."""
        if self._process.is_alive():
            with contextlib.suppress(queue.Full):
                self._requests.put(_STOP, timeout=timeout)
            deadline = time.monotonic() + timeout
            while self._reader.is_alive() and self._process.is_alive() and time.monotonic() < deadline:
                self._reader.join(timeout=0.1)
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
        with self._lock:
            lost, self._pending = list(self._pending.values()), {}
        for row in lost:
            row["shadow_status"] = "lost: the shadow worker stopped before answering"
            self._log_row(row)
