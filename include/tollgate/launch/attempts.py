"""One Airflow try = one training attempt: open it in the ledger, and close it with a decision.

Both launch operators use this. A preemption raises ``TrainingPreempted`` (Airflow retries at once: the
retry policy sets no delay), a failure within its budget raises ``TrainingAttemptFailed`` (the task's
``retry_delay`` applies), and an exhausted budget or bad input raises ``AirflowFailException`` (no more
retries) with a message naming the cause.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from tollgate.launch import ledger as ledgers
from tollgate.launch.budget import Budgets, Decision, Tally, decide, wants_on_demand
from tollgate.launch.classify import Classification
from tollgate.launch.job import TrainingJob, airflow_env
from tollgate.launch.ledger import AttemptLedger, AttemptRecord
from tollgate.launch.local import Interruption
from tollgate.launch.plan import LaunchPlan


class TrainingPreempted(AirflowException):
    """The attempt lost its spot capacity; the next try resumes from the checkpoint."""


class TrainingAttemptFailed(AirflowException):
    """A real failure with failure budget left; the next try starts from the checkpoint too."""


def retry_policy(preemption_delay: timedelta = timedelta(0)) -> ExceptionRetryPolicy:
    """Preemptions retry at once (new capacity is all they need); other errors keep the task's delay.

    The worker sends the delay with the retry (``retry_delay_override``) and the scheduler queues the next
    try as soon as ``end_date + delay`` has passed: with 0 on its next loop. Only ``TrainingPreempted``
    matches, which ``end_attempt`` raises only for an attempt classified as a preemption within budget.
    """
    return ExceptionRetryPolicy(
        rules=[
            RetryRule(
                exception="tollgate.launch.attempts.TrainingPreempted",
                action=RetryAction.RETRY,
                retry_delay=preemption_delay,
                reason="Spot preemption: the next try resumes from the last checkpoint",
            ),
        ]
    )


@dataclass
class Attempt:
    plan: LaunchPlan
    job: TrainingJob  # the plan's job, with this try's capacity and Airflow environment
    ledger: AttemptLedger
    record: AttemptRecord
    before: Tally  # finished attempts of this series before this one
    interruption: Interruption | None

    @property
    def budgets(self) -> Budgets:
        return self.plan.budgets


def series_of(context: Mapping[str, Any]) -> int:
    """The first try number since the task was last cleared: budgets count attempts from there."""
    ti = context["ti"]
    retries = int(getattr(ti.task, "retries", 0) or 0)
    max_tries = int(getattr(ti, "max_tries", 0) or 0)
    return max(1, max_tries - retries + 1) if max_tries else 1


def begin_attempt(context: Mapping[str, Any], plan: LaunchPlan, log: Callable[[str], Any] = print) -> Attempt:
    """Record the start of this try in the ledger (idempotent for a try that re-enters after deferral)."""
    ti = context["ti"]
    job = plan.job
    ledger = ledgers.load(job.checkpoint_uri, job.training_run_id)
    series = series_of(context)
    before = ledger.tally(series)
    on_demand = job.on_demand or wants_on_demand(before.preemptions, plan.budgets)
    record = ledger.begin(
        try_number=ti.try_number,
        series=series,
        backend=plan.backend,
        capacity="on-demand" if on_demand else "spot",
        instance_type=job.instance_type,
    )
    before = ledger.tally(series)  # begin() may have closed a lost attempt
    interruption = plan.interruption_for(before.attempts) if plan.backend == "local" else None
    if interruption:
        record.interruption = interruption.describe()
    ledgers.save(job.checkpoint_uri, ledger, writer=record)
    env = airflow_env(
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        try_number=ti.try_number,
        attempt=record.attempt,
        preemptions=before.preemptions,
    )
    job = job.with_changes(on_demand=record.capacity == "on-demand", env={**job.env, **env})
    log(
        f"Training run {job.training_run_id}: attempt {record.attempt} (try {ti.try_number}) on "
        f"{record.capacity} capacity via {plan.backend}; so far {before.preemptions} preemptions "
        f"(budget {plan.budgets.preemptions}), {before.failures} failures (budget {plan.budgets.failures})"
    )
    if record.capacity == "on-demand" and not plan.job.on_demand:
        log("Preemption budget nearly spent: this last attempt asks for on-demand capacity")
    return Attempt(plan, job, ledger, record, before, interruption)


def end_attempt(
    attempt: Attempt,
    classification: Classification,
    log: Callable[[str], Any] = print,
    **facts: Any,
) -> dict[str, Any]:
    """Close the attempt in the ledger and act on the decision: return on success, raise otherwise."""
    attempt.record.finish(classification, **facts)
    ledgers.save(attempt.job.checkpoint_uri, attempt.ledger, writer=attempt.record)
    tally = attempt.ledger.tally(attempt.record.series)
    decision: Decision = decide(classification, tally, attempt.budgets)
    log(
        f"Attempt {attempt.record.attempt} {classification.outcome.value}: {classification.reason} "
        f"(exit code {classification.exit_code}, {attempt.record.duration_seconds} s)"
    )
    if decision.action == "succeed":
        return {
            "training_run_id": attempt.job.training_run_id,
            "attempt": attempt.record.attempt,
            "attempts": tally.attempts,
            "preemptions": tally.preemptions,
            "failures": tally.failures,
            "capacity": attempt.record.capacity,
        }
    log(decision.message)
    if decision.action == "fail":
        raise AirflowFailException(decision.message)
    if classification.is_preemption:
        raise TrainingPreempted(decision.message)
    raise TrainingAttemptFailed(decision.message)
