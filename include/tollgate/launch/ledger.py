"""The attempt ledger: one JSON document per training run, next to its checkpoints.

It records every attempt (Airflow try) with its classification, so budgets survive retries, worker restarts
and deferrals, and the spot report can be written from facts. Plain Python; stored with the trainer's
storage (local folder written atomically, or one S3 PUT), under ``<checkpoint_uri>/attempts.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tollgate.launch.budget import Tally
from tollgate.launch.classify import Classification, Outcome

LEDGER_NAME = "attempts.json"
RUNNING = "running"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class AttemptRecord:
    attempt: int  # 1-based within the training run
    try_number: int  # Airflow try number
    series: int  # first try number after the task was (re)started or cleared: budgets count per series
    backend: str  # local | kubernetes
    capacity: str  # spot | on-demand
    instance_type: str
    started_at: str = field(default_factory=_now)
    started_epoch: float = field(default_factory=time.time)
    finished_at: str | None = None
    duration_seconds: float | None = None
    outcome: str = RUNNING
    reason: str = ""
    exit_code: int | None = None
    interruption: str | None = None  # the injected interruption, if any
    resumed_from_step: int | None = None
    last_step: int | None = None
    pod_name: str | None = None

    @property
    def finished(self) -> bool:
        return self.outcome != RUNNING

    def finish(self, classification: Classification, **facts: Any) -> None:
        self.outcome = classification.outcome.value
        self.reason = classification.reason
        self.exit_code = classification.exit_code
        self.finished_at = _now()
        self.duration_seconds = round(max(0.0, time.time() - self.started_epoch), 3)
        for key, value in facts.items():
            if value is not None:
                setattr(self, key, value)


@dataclass
class AttemptLedger:
    training_run_id: str
    attempts: list[AttemptRecord] = field(default_factory=list)

    # ---- queries -----------------------------------------------------------------------------
    def find(self, try_number: int) -> AttemptRecord | None:
        return next((a for a in self.attempts if a.try_number == try_number), None)

    def series_records(self, series: int) -> list[AttemptRecord]:
        return [a for a in self.attempts if a.series == series]

    def tally(self, series: int) -> Tally:
        records = [a for a in self.series_records(series) if a.finished]
        return Tally(
            attempts=len(records),
            preemptions=sum(a.outcome in (Outcome.PREEMPTED, Outcome.LOST) for a in records),
            failures=sum(a.outcome == Outcome.FAILED for a in records),
        )

    # ---- updates -----------------------------------------------------------------------------
    def begin(
        self, *, try_number: int, series: int, backend: str, capacity: str, instance_type: str
    ) -> AttemptRecord:
        """Record the start of a try (or return it when the same try re-enters, e.g. after a deferral).

        A record of an earlier try still marked running never reported back: its worker died with it
        (node or worker lost), which is counted as a preemption.
        """
        existing = self.find(try_number)
        if existing is not None:
            return existing
        for stale in self.attempts:
            if not stale.finished:
                stale.finish(
                    Classification(Outcome.LOST, "attempt ended without reporting (worker or node lost)")
                )
        record = AttemptRecord(
            attempt=len(self.attempts) + 1,
            try_number=try_number,
            series=series,
            backend=backend,
            capacity=capacity,
            instance_type=instance_type,
        )
        self.attempts.append(record)
        return record

    # ---- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"training_run_id": self.training_run_id, "attempts": [asdict(a) for a in self.attempts]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttemptLedger:
        return cls(data["training_run_id"], [AttemptRecord(**a) for a in data.get("attempts", [])])


def load(checkpoint_uri: str, training_run_id: str) -> AttemptLedger:
    from tollgate.storage import Folder

    storage = Folder(checkpoint_uri)
    if not storage.exists(LEDGER_NAME):
        return AttemptLedger(training_run_id)
    ledger = AttemptLedger.from_dict(json.loads(storage.read(LEDGER_NAME)))
    if ledger.training_run_id != training_run_id:
        raise ValueError(
            f"{checkpoint_uri}/{LEDGER_NAME} belongs to training run {ledger.training_run_id!r}, not "
            f"{training_run_id!r}: each training run needs its own checkpoint URI."
        )
    return ledger


class StaleLedgerWrite(RuntimeError):
    """A try wrote the ledger after a newer try of the same training run had begun."""


def save(checkpoint_uri: str, ledger: AttemptLedger, writer: AttemptRecord | None = None) -> None:
    """Store ``ledger``; with ``writer`` (the try that writes), refuse when a newer try has begun since.

    A try Airflow gave up on (a zombie worker) that reports late would otherwise replace the ledger with its
    older copy and erase the newer try's record. The check and the write hold the folder's writer lock
    (local folders; on S3 they are two requests).
    """
    from tollgate.storage import Folder

    storage = Folder(checkpoint_uri)
    with storage.locked():
        if writer is not None and storage.exists(LEDGER_NAME):
            stored = AttemptLedger.from_dict(json.loads(storage.read(LEDGER_NAME)))
            newest = max((a.try_number for a in stored.attempts), default=0)
            if newest > writer.try_number:
                raise StaleLedgerWrite(
                    f"try {writer.try_number} (attempt {writer.attempt}) of training run "
                    f"{ledger.training_run_id} is stale: try {newest} began after it, so its record in "
                    f"{checkpoint_uri}/{LEDGER_NAME} is not written. The newer try owns the run."
                )
        storage.write(LEDGER_NAME, json.dumps(ledger.to_dict(), indent=2).encode())
