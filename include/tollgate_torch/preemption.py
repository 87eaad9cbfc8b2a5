"""SIGTERM handling: the spot notice.

Inside the training loop the handler only sets a flag: the loop finishes the current optimizer
step, saves a checkpoint and exits with PREEMPTED. Outside it (set-up, final evaluation, upload)
there is no new work to save, so the handler raises :class:`Preempted` to exit at once. A watchdog
exits with PREEMPTED when the grace period is about to end, so the process leaves on its own terms
(the last complete checkpoint stays valid) instead of being SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tollgate_torch import EXIT_PREEMPTED, Preempted

WATCHDOG_MARGIN_SECONDS = 1.0


class PreemptionGuard:
    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.requested_at: float | None = None
        self._deferred = False  # True inside the training loop and while saving
        self._previous = None

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()
            print(
                f"[tollgate.training] SIGTERM received: saving and exiting within {self.grace_seconds:g} s",
                file=sys.stderr,
                flush=True,
            )
            self._start_watchdog()
        if not self._deferred:
            raise Preempted("SIGTERM outside the training loop")

    def _start_watchdog(self) -> None:
        delay = max(0.0, self.grace_seconds - WATCHDOG_MARGIN_SECONDS)

        def expire() -> None:
            print(
                f"[tollgate.training] grace period of {self.grace_seconds:g} s is ending before the "
                "checkpoint completed; exiting as preempted (the previous checkpoint stays valid)",
                file=sys.stderr,
                flush=True,
            )
            os._exit(EXIT_PREEMPTED)

        timer = threading.Timer(delay, expire)
        timer.daemon = True
        timer.start()

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """SIGTERM only sets the flag inside this block (the loop checks it between steps)."""
        previous, self._deferred = self._deferred, True
        try:
            yield
        finally:
            self._deferred = previous

    def raise_if_requested(self) -> None:
        if self.requested:
            raise Preempted("SIGTERM received")
