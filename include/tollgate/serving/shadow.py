"""Shadow mirroring off the response path: a bounded queue and one worker thread.

The request path calls ``offer`` after its response is built: ``put_nowait`` or, when the queue is full,
the item is dropped and counted (logged without a shadow output), never blocking the user. The worker
predicts with the challenger the request saw and completes the request's prediction-log row, so served
and shadow outputs are joined by request id in one row.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from tollgate.serving.outputs import to_jsonable

_STOP = object()


class ShadowMirror:
    def __init__(self, size: int, log_row: Callable[[dict[str, Any]], None], metrics: Any):
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._log_row = log_row
        self._metrics = metrics
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self.dropped = 0

    def start(self) -> None:
        self._thread.start()

    def offer(self, challenger: Any, model_input: Any, row: dict[str, Any]) -> bool:
        """Queue one shadow prediction; False (row logged as dropped) when the queue is full."""
        try:
            self._queue.put_nowait((challenger, model_input, row))
        except queue.Full:
            self.dropped += 1
            self._metrics.shadow_dropped.inc()
            row.update(shadow_version=challenger.version, shadow_status="dropped")
            self._log_row(row)
            return False
        self._metrics.shadow_depth.set(self._queue.qsize())
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            challenger, model_input, row = item
            start = time.perf_counter()
            try:  # the challenger's own input check runs here too, off the response path
                output = challenger.predict(model_input() if callable(model_input) else model_input)
                row.update(shadow_output=json.dumps(to_jsonable(output)), shadow_status="ok")
            except Exception as err:  # a failing challenger is evidence, never a crash
                row.update(shadow_status=f"error: {type(err).__name__}: {err}"[:500])
            row.update(
                shadow_version=challenger.version, shadow_latency_ms=(time.perf_counter() - start) * 1000
            )
            self._metrics.shadow_done.labels(status="ok" if row["shadow_status"] == "ok" else "error").inc()
            self._metrics.shadow_depth.set(self._queue.qsize())
            self._log_row(row)

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued (drain), then stop the worker."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=timeout)
