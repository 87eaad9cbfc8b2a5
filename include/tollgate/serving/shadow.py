"""Shadow mirroring off the response path: a bounded hand-off into a separate worker process.

The router calls ``offer`` once the response is sent (a background task): it pickles the raw request
(a few hundred bytes) and writes it to a non-blocking pipe itself (``handoff``: no feeder thread to wake
on the router's core), or, when as many requests as the bound are still waiting for their shadow answer,
drops it and counts it (logged without a shadow output), never blocking the user. The challenger
predicts in its own process, so its work does not hold the router's GIL. It loads the challenger from
the files the router verified (the verified cache), checks the input against the challenger's own
signature and predicts; a reader thread joins each result to the request's prediction-log row by request
id, so served and shadow outputs sit in one row.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tollgate.serving.handoff import FrameReader, FrameWriter

_STOP = "__stop__"


def _worker(
    requests: Any,
    results: Any,
    batch_size: int = 1,
    linger_s: float = 0.0,
    idle_priority: bool = False,
    cpus: frozenset[int] = frozenset(),
) -> None:
    """The shadow process: load each challenger once (by its verified path), predict, send results back.

    It ignores SIGTERM and SIGINT (a signal to the router's process group reaches it too): the router
    stops it after draining, so queued shadow work is finished and logged. With ``batch_size`` > 1 it
    answers up to that many waiting requests with one ``predict`` and one message back, and after the
    first request of a batch it sleeps ``linger_s`` once for more to arrive: on a core shared with the
    router, one wake-up and one call for many requests keep the shadow's cost off the router's response
    times."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _lower_priority(idle_priority)
    if cpus:
        _place(cpus)
    import mlflow.pyfunc

    from tollgate.serving.inputs import InputSpec

    loaded: dict[str, tuple[Any, InputSpec]] = {}

    def model(path: str) -> tuple[Any, InputSpec]:
        if path not in loaded:
            pyfunc = mlflow.pyfunc.load_model(path)
            loaded.clear()  # one challenger at a time
            loaded[path] = (pyfunc, InputSpec.from_pyfunc(pyfunc))
        return loaded[path]

    inbox = _Inbox(FrameReader(requests.fileno()), batch_size, linger_s)
    while True:
        batch = inbox.next_batch()
        stop = batch[-1] == _STOP
        work = batch[:-1] if stop else batch
        answers: list[tuple[str, str | None, str, float]] = []
        for group in _groups(work):
            answers.extend(_answer(model, group))
        if answers:
            results.put(answers)
        if stop:
            results.put(_STOP)
            return


def _lower_priority(idle: bool) -> None:
    """Sharing a core, the router's requests go first. Nice 10 still lets a running batch hold the core
    for a while after a request arrives; SCHED_IDLE gives the core back at once when the router wakes,
    at the price of no shadow work at all while the core is saturated (the queue then fills and drops)."""
    with contextlib.suppress(OSError, AttributeError):
        if idle:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        os.nice(10)


def _place(cpus: frozenset[int]) -> None:
    """Run on ``cpus`` only; CPUs this process may not use are left out, and with none left it stays put
    (a setting written for another machine slows nothing down, and the router's log says so)."""
    allowed = os.sched_getaffinity(0)
    usable = set(cpus) & allowed
    if not usable:
        print(f"shadow worker: none of CPUs {sorted(cpus)} is usable here ({sorted(allowed)}); not pinned")
        return
    os.sched_setaffinity(0, usable)


class _Inbox:
    """The worker's side of the hand-off: requests in arrival order, taken in batches."""

    def __init__(self, reader: FrameReader, batch_size: int, linger_s: float):
        self._reader = reader
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._waiting: list[Any] = []

    def next_batch(self) -> list[Any]:
        """The next request (waited for) and, after one sleep of ``linger_s`` (a burst costs one wake-up,
        not one per request), whatever else has arrived, up to the batch size. A stop ends a batch; the
        router's end of the pipe gone reads as a stop."""
        if not self._waiting:
            self._waiting = self._reader.read(None)
            if not self._waiting:
                return [_STOP]
            if self._linger_s > 0 and len(self._waiting) < self._batch_size and _STOP not in self._waiting:
                time.sleep(self._linger_s)
            self._waiting += self._reader.read(0)
        batch: list[Any] = []
        while self._waiting and len(batch) < self._batch_size:
            batch.append(self._waiting.pop(0))
            if batch[-1] == _STOP:
                break
        return batch


def _groups(work: list[Any]) -> list[list[Any]]:
    """Consecutive requests for the same model copy and endpoint kind (they can share one predict)."""
    groups: list[list[Any]] = []
    for item in work:
        if groups and groups[-1][0][1:3] == item[1:3]:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _answer(model: Callable, group: list[Any]) -> list[tuple[str, str | None, str, float]]:
    """Shadow outputs for a group: one ``predict`` over all its rows when they parse and split cleanly
    (rows endpoint, a signature to check them against), else one ``predict`` per request."""
    from tollgate.serving.outputs import to_jsonable

    start = time.perf_counter()
    try:
        pyfunc, spec = model(group[0][1])
    except Exception as err:  # a challenger that cannot load is evidence, never a crash
        status = f"error: {type(err).__name__}: {err}"[:500]
        return [(item[0], None, status, (time.perf_counter() - start) * 1000) for item in group]
    kind = group[0][2]
    if len(group) > 1 and kind == "rows" and (spec.columns is not None or spec.tensor_dtype is not None):
        together = _predict_together(pyfunc, spec, group)
        if together is not None:
            return together
    answers = []
    for request_id, _, _, payload in group:
        start = time.perf_counter()
        try:
            model_input = spec.from_rows(payload) if kind == "rows" else spec.from_v2(payload)
            output, status = json.dumps(to_jsonable(pyfunc.predict(model_input))), "ok"
        except Exception as err:  # a failing challenger is evidence, never a crash
            output, status = None, f"error: {type(err).__name__}: {err}"[:500]
        answers.append((request_id, output, status, (time.perf_counter() - start) * 1000))
    return answers


def _predict_together(pyfunc: Any, spec: Any, group: list[Any]) -> list[Any] | None:
    """One predict over the rows of every request in the group, split back by each request's row count;
    None (answer one by one) when any request's rows do not parse or the output does not split by row.

    Every row gets the same checks as alone; when any fails, the group is answered one by one, so a bad
    request gets its own error. Rows are predicted independently by the models this serves (as with the
    dynamic batching of KServe or Triton); ``shadow_latency_ms`` is then the time of the shared predict."""
    from tollgate.serving.inputs import MAX_ROWS
    from tollgate.serving.outputs import to_jsonable

    start = time.perf_counter()
    payloads = [payload for _, _, _, payload in group]
    if not all(isinstance(p, list) and 0 < len(p) <= MAX_ROWS for p in payloads):
        return None
    rows = [row for payload in payloads for row in payload]
    try:
        output = to_jsonable(pyfunc.predict(spec.from_rows(rows, limit=None)))
    except Exception:
        return None
    if not isinstance(output, list) or len(output) != len(rows):
        return None
    elapsed_ms = (time.perf_counter() - start) * 1000
    answers, at = [], 0
    for request_id, _, _, payload in group:
        answers.append((request_id, json.dumps(output[at : at + len(payload)]), "ok", elapsed_ms))
        at += len(payload)
    return answers


class ShadowMirror:
    def __init__(
        self,
        size: int,
        log_row: Callable[[dict[str, Any]], None],
        metrics: Any,
        batch_size: int = 32,
        linger_s: float = 0.05,
        idle_priority: bool = False,
        cpus: frozenset[int] = frozenset(),
    ):
        context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads or locks
        self._size = size
        self._worker_end, self._router_end = context.Pipe(duplex=False)
        self._requests = FrameWriter(self._router_end.fileno())
        self._results = context.Queue()
        self._process = context.Process(
            target=_worker,
            args=(self._worker_end, self._results, max(1, batch_size), linger_s, idle_priority, cpus),
            name="tollgate-shadow",
            daemon=True,
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
        self._worker_end.close()  # the worker holds its own copy: with the worker gone, writes fail at once
        self._reader.start()

    @property
    def depth(self) -> int:
        return len(self._pending)

    def offer(self, challenger: Any, kind: str, payload: Any, row: dict[str, Any]) -> bool:
        """Hand one shadow prediction to the worker; False (row logged as dropped) when ``size`` requests
        already wait for their shadow answer."""
        row["shadow_version"] = challenger.version
        path = str(challenger.path)
        with self._lock:
            full = len(self._pending) >= self._size
            if not full:
                self._paths.add(path)
                self._pending[row["request_id"]] = row
        if full:
            self.dropped += 1
            self._metrics.shadow_dropped.inc()
            row["shadow_status"] = "dropped"
            self._log_row(row)
            return False
        self._requests.send((row["request_id"], path, kind, payload))
        self._metrics.shadow_depth.set(self.depth)
        return True

    def worker_cpus(self) -> list[int]:
        """The CPUs the worker process may run on now (empty while it is not running)."""
        with contextlib.suppress(OSError, ValueError):
            if self._process.is_alive() and self._process.pid is not None:
                return sorted(os.sched_getaffinity(self._process.pid))
        return []

    def paths_in_flight(self) -> set[Path]:
        """The model copies the worker may still load for pending work (none once nothing is pending)."""
        with self._lock:
            if not self._pending:
                self._paths.clear()
            return {Path(p) for p in self._paths}

    def _read(self) -> None:
        while True:
            answers = self._results.get()
            if answers == _STOP:
                return
            for request_id, output, status, latency_ms in answers:
                with self._lock:
                    row = self._pending.pop(request_id, None)
                if row is None:
                    continue
                row.update(shadow_output=output, shadow_status=status, shadow_latency_ms=latency_ms)
                self._metrics.shadow_done.labels(status="ok" if status == "ok" else "error").inc()
                self._log_row(row)
            self._requests.pump()  # the worker has read: the pipe has room for what waits in the outbox
            self._metrics.shadow_depth.set(self.depth)

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued (drain), stop the worker; rows it never answered are logged as lost."""
        if self._process.is_alive():
            deadline = time.monotonic() + timeout
            self._requests.send(_STOP)
            self._requests.drain(timeout)
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
