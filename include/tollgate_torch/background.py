"""Checkpoints off the training path: the loop pays for an in-memory snapshot, a worker thread for the rest.

:meth:`BackgroundSaver.submit` copies the state (every tensor cloned to host memory, plain values copied;
the caller captures RNG states and the position into the state first), hands the copy to one worker thread
and returns: serializing, sha256, the atomic write with its fsyncs, the manifest and pruning run there,
through :meth:`CheckpointStore.save`, so a checkpoint is listed only once it is complete, as before.
At most one save is in flight: a new ``submit`` first waits for the previous one (never two writers of one
manifest), and that wait counts as stall. A failed save (a disk error, :class:`StaleAttempt` from fencing)
is raised in the training thread at its next ``check``, ``submit`` or ``wait``.

Signals are delivered to the main thread only, and a join there still runs their handlers, so the
preemption guard keeps working while the loop waits for a save.
"""

from __future__ import annotations

import contextlib
import copy
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from tollgate_torch.checkpoints import CheckpointStore, Entry

_IMMUTABLE = (int, float, str, bool, bytes, type(None))
WORKER_NICENESS = 10


def snapshot(value: Any) -> Any:
    """A copy later optimizer steps cannot change: tensors cloned (to host memory), containers rebuilt."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, list):
        return [snapshot(item) for item in value]
    if isinstance(value, tuple):
        return tuple(snapshot(item) for item in value)
    if isinstance(value, _IMMUTABLE):
        return value
    return copy.deepcopy(value)


class BackgroundSaver:
    """One checkpoint store, one save in flight at a time, persisted by one long-lived worker thread.

    The worker is started once and fed through a queue: starting a thread per save would hand it the
    GIL at once and hold the loop up for a thread switch (milliseconds) on every checkpoint.
    """

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store
        self.last_saved: Entry | None = None  # the newest checkpoint this saver has committed
        self.snapshot_seconds = 0.0  # of the latest submit: copying the state
        self.write_seconds = 0.0  # of the latest finished save: serialize, hash, write, manifest
        self._jobs: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def in_flight(self) -> bool:
        return not self._idle.is_set()

    def submit(
        self,
        state: dict[str, Any],
        step: int,
        epoch: int,
        then: Callable[[Entry], None] | None = None,
    ) -> float:
        """Snapshot ``state`` and save it in the background; returns the seconds the caller was held up.

        ``then`` runs on the worker after the checkpoint is committed (e.g. writing a progress ledger).
        """
        started = time.perf_counter()
        self.wait()
        copied_at = time.perf_counter()
        frozen = snapshot(state)
        self.snapshot_seconds = time.perf_counter() - copied_at
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
            self._worker.start()
        self._idle.clear()
        self._jobs.put((frozen, step, epoch, then))
        return time.perf_counter() - started

    def _run(self) -> None:
        # Below the training thread where the OS allows (Linux: per-thread nice): on a busy machine the
        # write takes longer, the training steps do not.
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
        while True:
            state, step, epoch, then = self._jobs.get()
            try:
                entry, seconds = self.store.save(state, step, epoch)
                self.write_seconds = seconds
                self.last_saved = entry
                if then is not None:
                    then(entry)
            except BaseException as exc:  # re-raised in the training thread
                self._error = exc
            finally:
                del state
                self._idle.set()

    def wait(self) -> float:
        """Block until the save in flight is committed; raise its error. Returns the seconds waited."""
        started = time.perf_counter()
        self._idle.wait()
        self.check()
        return time.perf_counter() - started

    def check(self) -> None:
        """Raise the error of a save that failed in the background (once), without waiting."""
        error, self._error = self._error, None
        if error is not None:
            raise error

    def drain(self) -> None:
        """Wait for the save in flight and drop its error: for exits that already carry an error."""
        with contextlib.suppress(BaseException):  # the exit in progress matters more
            self.wait()
