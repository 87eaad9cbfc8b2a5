"""The deferrable wait of a rollout stage: a trigger that polls the router's cheap counters.

The triggerer only reads ``/metrics`` and ``/status`` (two small GETs per poll, no analysis, no data):
it fires when the stage has its samples (requests per arm, or successful shadow pairs), the prediction
log has flushed them (the log's row counter caught up), and the labels have matured; or when the rollout
was ended under it (guardrail, lease, an admin); or at the deadline. The worker then runs the analysis.

A stage that replayed its own traffic (the local platform) has sent every request before it would defer:
what is left is the log's flush and the labels' delay, seconds. It reads the same counters in the task for
up to ``SETTLE_INLINE_S`` instead of deferring: a deferral round trip costs seconds of scheduling, and a
trigger firing within seconds of its deferral meets a race in Airflow 3.3's scheduler (the deferring try's
late "success" from the executor makes it fail the resumed task: apache/airflow#67287, #72716). For the
same reason a deferred stage's trigger never fires sooner than ``MIN_DEFERRAL_S`` after the deferral.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

READY, DEADLINE, ENDED = "ready", "deadline", "ended"
SETTLE_INLINE_S = 20.0  # a replayed stage's tail (log flush, labels, shadow predictions) is read in the task
MIN_DEFERRAL_S = 6.0  # a trigger holds its event this long after the deferral (see the docstring)


def progress(baseline: dict[str, float], now: dict[str, float]) -> dict[str, float]:
    return {k: now.get(k, 0.0) - baseline.get(k, 0.0) for k in now}


def stage_outcome(
    stage: dict[str, Any], counts: dict[str, float], rollout: dict[str, Any], at: float
) -> str | None:
    """READY / ENDED / DEADLINE, or None to keep waiting (pure: the trigger and the tests call it)."""
    if rollout.get("rollout_id") != stage["rollout_id"] or rollout.get("mode") != stage["mode"]:
        return ENDED
    if rollout.get("mode") == "canary" and int(rollout.get("weight_bp") or 0) != stage["weight_bp"]:
        return ENDED
    delta = progress(stage["baseline"], counts)
    enough = all(delta.get(k, 0.0) >= n for k, n in stage["need"].items())
    flushed = delta.get("log_rows", 0.0) >= delta.get("requests", 0.0)
    if enough and flushed and at >= stage["labels_at"]:
        return READY
    return DEADLINE if at >= stage["deadline"] else None


def settle_inline(
    stage: dict[str, Any], seconds: float, poll_s: float = 0.25, admin: Any = None
) -> dict[str, Any] | None:
    """The wait's event when the stage's outcome comes within ``seconds``, read in the task from the same
    counters the trigger reads; None when it does not (then the task defers as usual)."""
    from tollgate.serving.admin_client import RouterAdmin

    admin = admin or RouterAdmin(stage["router_url"], timeout=10)
    until = time.time() + seconds
    while True:
        now = time.time()
        counts, rollout = admin.counters(), admin.status()["rollout"]
        outcome = stage_outcome(stage, counts, rollout, now)
        if outcome is not None:
            progress_now = progress(stage["baseline"], counts)
            return {"outcome": outcome, "progress": progress_now, "rollout": rollout, "at": now, "error": ""}
        if now + poll_s > until:
            return None
        time.sleep(poll_s)


class RolloutCountersTrigger(BaseTrigger):
    def __init__(self, stage: dict[str, Any], poll_s: float = 5.0):
        super().__init__()
        self.stage = stage
        self.poll_s = poll_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"stage": self.stage, "poll_s": self.poll_s},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx

        from tollgate.serving.admin_client import counters

        url = self.stage["router_url"].rstrip("/")
        last_error = ""
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                now = time.time()
                try:
                    metrics = await client.get(f"{url}/metrics")
                    status = await client.get(f"{url}/status")
                    metrics.raise_for_status()
                    status.raise_for_status()
                    counts, rollout = counters(metrics.text), status.json()["rollout"]
                    outcome = stage_outcome(self.stage, counts, rollout, now)
                except (httpx.HTTPError, KeyError, ValueError) as err:  # router restarting: keep waiting
                    last_error = f"{type(err).__name__}: {err}"
                    self.log.warning("router not readable: %s", last_error)
                    counts, rollout = {}, {}
                    outcome = DEADLINE if now >= self.stage["deadline"] else None
                if outcome is not None:
                    # never sooner than MIN_DEFERRAL_S after the deferral (``fire_after``; see the docstring)
                    await asyncio.sleep(max(0.0, float(self.stage.get("fire_after", 0.0)) - time.time()))
                    yield TriggerEvent(
                        {
                            "outcome": outcome,
                            "progress": progress(self.stage["baseline"], counts) if counts else {},
                            "rollout": rollout,
                            "at": now,
                            "error": last_error,
                        }
                    )
                    return
                await asyncio.sleep(self.poll_s)


class RolloutStageOperator(BaseOperator):
    """One stage in one task: start it (router mode/weight, lease, local replay), defer on the counters
    trigger (the worker slot is free while it waits), then analyse; a FAIL rolls the rollout back at once.

    Returns the stage's sealed verdict record. ``factor`` > 1 is an approver's Extend: more samples and
    a longer deadline, analysed over every row of the stage since it started.
    """

    def __init__(self, *, stage: str, begin_task_id: str, factor: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.stage = stage
        self.begin_task_id = begin_task_id
        self.factor = factor

    @property
    def record_name(self) -> str:
        """The stored record's name: the stage, or ``<stage>.extend`` for an approvers' Extend."""
        return self.stage if self.factor == 1.0 else f"{self.stage}.extend"

    def execute(self, context: Any) -> dict[str, Any] | None:
        from tollgate.evaluation.rollout_stages import load_plan, load_record, replay_frame, start_stage

        rollout = context["ti"].xcom_pull(task_ids=self.begin_task_id)
        if not rollout:
            raise ValueError(f"no rollout record from {self.begin_task_id}: the rollout was not begun")
        decided = load_record(rollout["storage_root"], rollout["rollout_id"], self.record_name)
        if decided is not None:  # a cleared or retried task: the verdict stands, it is not drawn again
            self.log.warning(
                "stage %s of rollout %s was already decided (%s): not run again; the stored record stands",
                self.stage, rollout["rollout_id"], decided["verdict"],
            )  # fmt: skip
            return decided
        plan = load_plan()
        rows, label = replay_frame(plan, rollout)
        started = start_stage(
            plan, self.stage, rollout["rollout_id"], rollout["version"], rollout["owner"],
            rows, label, rollout["storage_root"], self.factor,
        )  # fmt: skip
        self.log.info(
            "stage %s started on %s (%s); replayed %s; waiting for %s, deadline in %.0f s",
            self.stage, plan.router_url, started["mode"], started["replayed"], started["need"],
            started["deadline"] - time.time(),
        )  # fmt: skip
        if started["replayed"]:  # its own traffic is in: the rest is seconds (see the module docstring)
            event = settle_inline(started, SETTLE_INLINE_S)
            if event is not None:
                self.log.info("stage %s: %s without deferring", self.stage, event["outcome"])
                return self.execute_complete(context, event, started)
        started = {**started, "fire_after": time.time() + MIN_DEFERRAL_S}
        self.defer(
            trigger=RolloutCountersTrigger(started, started["poll_s"]),
            method_name="execute_complete",
            kwargs={"started": started},
            timeout=timedelta(seconds=max(60.0, started["deadline"] - time.time() + 300)),
        )

    def execute_complete(
        self, context: Any, event: dict[str, Any], started: dict[str, Any]
    ) -> dict[str, Any]:
        from tollgate.evaluation.rollout_stages import (
            FAIL,
            analyse_stage,
            load_plan,
            load_record,
            rollback,
            save_record,
            stage_table,
        )

        rollout = context["ti"].xcom_pull(task_ids=self.begin_task_id)
        plan = load_plan()
        self.log.info(
            "stage %s wait ended: %s (progress %s)", self.stage, event["outcome"], event.get("progress")
        )
        record = analyse_stage(plan, started, event, rollout["task"], rollout["storage_root"])
        record = {**record, "rollout_id": rollout["rollout_id"]}
        if not save_record(rollout["storage_root"], rollout["rollout_id"], self.record_name, record):
            # another try stored its verdict while this one waited: that one stands
            record = load_record(rollout["storage_root"], rollout["rollout_id"], self.record_name)
        self.log.info(
            "%s: %s %s\n%s",
            self.stage,
            record["verdict"],
            record["reasons"],
            stage_table({self.stage: record}),
        )
        if record["verdict"] == FAIL:
            ended = rollback(plan, record)
            self.log.warning("ROLLED BACK (weight 0, challenger unloaded): %s", ended.get("aborted_reason"))
        return record
