"""From a spot notice to training again, as a user sees it in Airflow: the split of one recovery.

Input: the timestamped lines of the preempted try's log and of the retry's log (Airflow's structured task
log: every line carries the time it was written), and the two tries' records (end of the first; scheduled,
queued and started of the retry). The local launcher writes its own lines around the trainer's output,
which it streams as it comes, so the log alone dates each phase:

    notice      "Injected spot interruption: SIGTERM"          (try 1: the notice is sent)
    saved       "TOLLGATE_PREEMPTED step=N ..."                 (try 1: final checkpoint committed)
    try 1 end                                                   (record: the task reported its retry)
    queued / started                                            (record: scheduler queued it / it runs)
    launched    "Launching trainer"                             (try 2: the operator starts the process)
    resumed     "TOLLGATE_RESUMED from_step=N ..."              (try 2: data read, state restored)
    timings     "TOLLGATE_TIMINGS imports_s=.. data_s=.. prepare_s=.. restore_s=.."  (the trainer's own,
                optional: without it data, prepare and restore count under trainer_imports)
    first step  the first "TOLLGATE_PROGRESS" after it

Plain Python, no Airflow: the benchmark and the platform test call it with what the REST API returned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

NOTICE = "Injected spot interruption: SIGTERM"
SAVED = re.compile(r"^TOLLGATE_PREEMPTED step=(\d+)")
LAUNCHED = "Launching trainer"
RESUMED = re.compile(r"^TOLLGATE_RESUMED from_step=(\d+)")
TIMINGS = re.compile(r"^TOLLGATE_TIMINGS (.*)$")
PROGRESS = re.compile(r"^TOLLGATE_PROGRESS step=(\d+)")

LogLine = tuple[datetime, str]

# The phases in order; they add up to ``total`` (SIGTERM to the first new step of the retry).
PHASES = (
    "exit_final_checkpoint",  # notice -> TOLLGATE_PREEMPTED: the trainer's last save
    "exit_report",  # -> end of try 1: trainer exit, attempt closed in the ledger, task reports the retry
    "scheduling",  # -> queued: retry delay and the scheduler's loop
    "executor_start",  # -> start of try 2: the executor starts the task process
    "task_start",  # -> "Launching trainer": DAG parsed, operator opens the attempt
    "trainer_imports",  # -> resume report, less data/prepare/restore: interpreter and imports
    "data",  # dataset read (DVC or the local cache)
    "prepare",  # split, features, tensors, model
    "restore",  # newest valid checkpoint read, verified and loaded
    "first_step",  # resume report -> first TOLLGATE_PROGRESS
)


@dataclass(frozen=True)
class TryTimes:
    """A try's record from Airflow (the REST API's task instance tries)."""

    queued: datetime | None
    started: datetime | None
    ended: datetime | None


class RecoveryNotFound(ValueError):
    """The logs do not hold a preemption followed by a resumed retry."""


def _first(lines: Iterable[LogLine], match) -> tuple[datetime, str]:
    for when, text in lines:
        if match(text):
            return when, text
    raise RecoveryNotFound("missing line")


def split(
    first_log: list[LogLine], first: TryTimes, retry_log: list[LogLine], retry: TryTimes
) -> dict[str, float]:
    """Seconds per phase (PHASES) and ``total``, plus ``resumed_from_step`` and ``preempted_at_step``."""
    try:
        notice, _ = _first(first_log, lambda t: t.startswith(NOTICE))
        saved, saved_text = _first(first_log, SAVED.match)
        launched, _ = _first(retry_log, lambda t: t.startswith(LAUNCHED))
        resumed, resumed_text = _first(retry_log, RESUMED.match)
        after = [(w, t) for w, t in retry_log if w >= resumed]
        stepped, _ = _first(after, PROGRESS.match)
    except RecoveryNotFound as exc:
        raise RecoveryNotFound(
            "the two logs do not show a SIGTERM, its final checkpoint, and a retry that launched the "
            "trainer, resumed (TOLLGATE_RESUMED) and stepped: was the first try "
            "interrupted by the local launcher (interruption = sigterm_at_step)?"
        ) from exc
    if first.ended is None or retry.queued is None or retry.started is None:
        raise RecoveryNotFound("the tries' records lack an end, queued or start time")
    # The trainer's own report of its start; a trainer without one has it all under trainer_imports.
    reported = next((m.group(1) for _, t in retry_log if (m := TIMINGS.match(t))), "")
    own = dict(pair.split("=", 1) for pair in reported.split() if "=" in pair)
    trainer = {k: float(own.get(f"{k}_s", 0.0)) for k in ("data", "prepare", "restore")}
    result = {
        "exit_final_checkpoint": (saved - notice).total_seconds(),
        "exit_report": (first.ended - saved).total_seconds(),
        "scheduling": (retry.queued - first.ended).total_seconds(),
        "executor_start": (retry.started - retry.queued).total_seconds(),
        "task_start": (launched - retry.started).total_seconds(),
        "trainer_imports": (resumed - launched).total_seconds() - sum(trainer.values()),
        **trainer,
        "first_step": (stepped - resumed).total_seconds(),
    }
    result["total"] = (stepped - notice).total_seconds()
    result["preempted_at_step"] = float(SAVED.match(saved_text).group(1))  # type: ignore[union-attr]
    result["resumed_from_step"] = float(RESUMED.match(resumed_text).group(1))  # type: ignore[union-attr]
    return result


def from_airflow(client, dag_id: str, run_id: str, task_id: str = "train_local", retry_try: int = 2):
    """The split of the recovery into try ``retry_try`` of ``task_id``, read through the REST API.

    ``client`` is a ``tollgate.platform.api.AirflowClient`` (its task_instances API is all this uses).
    """
    api = client.task_instances
    tries = {t.try_number: t for t in api.get_task_instance_tries(dag_id, run_id, task_id).task_instances}
    if retry_try - 1 not in tries or retry_try not in tries:
        raise RecoveryNotFound(f"{dag_id}/{run_id}/{task_id} has no tries {retry_try - 1} and {retry_try}")

    def lines(try_number: int) -> list[LogLine]:
        log = api.get_log(dag_id, run_id, task_id, try_number, accept="application/json")
        found = []
        for line in log.content.actual_instance or []:
            when, text = getattr(line, "timestamp", None), getattr(line, "event", None)
            if when is not None and isinstance(text, str):
                found.append((when, text))
        return found

    def times(record) -> TryTimes:
        return TryTimes(queued=record.queued_when, started=record.start_date, ended=record.end_date)

    return split(lines(retry_try - 1), times(tries[retry_try - 1]), lines(retry_try), times(tries[retry_try]))
