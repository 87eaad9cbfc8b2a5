"""The data-plane guardrail: hard limits on the canary arm's error rate and p99 latency over a recent
window, checked by the router itself so a bad canary stops within seconds without waiting for Airflow."""

from __future__ import annotations

import threading
import time
from collections import deque

from tollgate.serving.settings import GuardrailLimits


class Guardrail:
    def __init__(self, limits: GuardrailLimits):
        self.limits = limits
        self._events: deque[tuple[float, bool, float]] = deque()  # (monotonic time, ok, latency s)
        self._lock = threading.Lock()

    def observe(self, ok: bool, latency_s: float, now: float | None = None) -> None:
        with self._lock:
            self._events.append((now if now is not None else time.monotonic(), ok, latency_s))

    def reset(self) -> None:
        with self._lock:
            self._events.clear()

    def breach(self, now: float | None = None) -> str | None:
        """Why the canary must stop, or None. Fewer than ``min_requests`` in the window decide nothing."""
        now = now if now is not None else time.monotonic()
        with self._lock:
            while self._events and self._events[0][0] < now - self.limits.window_s:
                self._events.popleft()
            events = list(self._events)
        if len(events) < self.limits.min_requests:
            return None
        errors = sum(1 for _, ok, _ in events if not ok)
        rate = errors / len(events)
        if rate > self.limits.max_error_rate:
            return (
                f"guardrail: canary error rate {rate:.1%} ({errors}/{len(events)} in the last "
                f"{self.limits.window_s:.0f} s) above the limit {self.limits.max_error_rate:.1%}"
            )
        latencies = sorted(lat for _, _, lat in events)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000
        if p99 > self.limits.max_p99_ms:
            return (
                f"guardrail: canary p99 latency {p99:.1f} ms over {len(events)} requests in the last "
                f"{self.limits.window_s:.0f} s above the limit {self.limits.max_p99_ms:.0f} ms"
            )
        return None
