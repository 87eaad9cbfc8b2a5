"""Wiring of the shadow and canary stages into ``evaluate_and_promote`` (called inside the DAG body).

Per stage ``S`` (a TaskGroup)::

    S.run ─► S.route ─┬─ PASS ─────────► S.passed ──────┐
                      ├─ FAIL ─────────► S.failed ──────┼─► S.stop  (rollout over: evidence, rejection)
                      └─ INCONCLUSIVE ─► S.ask (approvers: Continue / Extend / Reject)
                            Continue ─► S.continued ────┤─► S.go_on ─► next stage's S.run
                            Reject ───► S.rejected ─────┤   (after the last stage: rollout_done)
                            Extend ───► S.extend ─► S.route_extended ─► S.extend_passed | S.extend_failed

Branch targets are distinct empty tasks and the joins (``go_on``, ``stop``) are never a branch's direct
target: Airflow marks a branch's unchosen direct downstream SKIPPED at once, so a join that several
branches target would be skipped by the first of them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import TaskGroup, TriggerRule, task

from tollgate.evaluation.rollout_plan import CONTINUE, EXTEND, REJECT, STAGES
from tollgate.evaluation.rollout_wait import RolloutStageOperator

ENTRY = "enter_rollout"
BEGIN = "begin_rollout"
SKIP = "skip_rollout"
DONE = "rollout_done"
JOIN = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS


class InconclusiveStageOperator(HITLBranchOperator):
    """Asks the approvers what to do with an INCONCLUSIVE stage; no answer in time counts as Reject."""

    def __init__(self, *, stage: str, record_task_id: str, **kwargs: Any):
        super().__init__(
            subject=f"Rollout stage {stage} is INCONCLUSIVE", options=[CONTINUE, EXTEND, REJECT],
            defaults=[REJECT], **kwargs,
        )  # fmt: skip
        self.stage = stage
        self.record_task_id = record_task_id

    def execute(self, context: Any) -> Any:
        from airflow.sdk import Variable

        from tollgate.config import default_for
        from tollgate.evaluation.rollout_stages import stage_table

        record = context["ti"].xcom_pull(task_ids=self.record_task_id)
        approvers = Variable.get("tollgate_approvers", default=default_for("tollgate_approvers"))
        self.assigned_users = [{"id": u, "name": u} for u in approvers.replace(",", " ").split()]
        self.response_timeout = timedelta(minutes=float(context["params"]["approval_timeout_minutes"]))
        self.body = "\n".join(
            [
                f"Stage **{self.stage}** could not decide: " + "; ".join(record["reasons"]),
                "",
                stage_table({self.stage: record}),
                "",
                f"**{CONTINUE}**: go on as if it passed (recorded in the evidence). **{EXTEND}**: wait for "
                f"more traffic and analyse again. **{REJECT}** (also when nobody answers): reject the "
                "version.",
                "",
                f"Evidence sha256 `{record['sha256']}`",
            ]
        )
        return super().execute(context)


def _stage_group(stage: str) -> tuple[TaskGroup, Any, Any]:
    with TaskGroup(stage) as group:
        run = RolloutStageOperator(task_id="run", stage=stage, begin_task_id=BEGIN)

        @task.branch(task_id="route")
        def route(record: dict[str, Any]) -> str:
            return f"{stage}." + {"PASS": "passed", "FAIL": "failed"}.get(record["verdict"], "ask")

        @task.branch(task_id="route_extended")
        def route_extended(record: dict[str, Any]) -> str:
            return f"{stage}." + ("extend_passed" if record["verdict"] == "PASS" else "extend_failed")

        ask = InconclusiveStageOperator(
            task_id="ask", stage=stage, record_task_id=f"{stage}.run",
            options_mapping={
                CONTINUE: f"{stage}.continued", EXTEND: f"{stage}.extend", REJECT: f"{stage}.rejected"
            },
        )  # fmt: skip
        extend = RolloutStageOperator(task_id="extend", stage=stage, begin_task_id=BEGIN, factor=2.0)
        passed, failed = EmptyOperator(task_id="passed"), EmptyOperator(task_id="failed")
        continued, rejected = EmptyOperator(task_id="continued"), EmptyOperator(task_id="rejected")
        extend_passed, extend_failed = (
            EmptyOperator(task_id="extend_passed"),
            EmptyOperator(task_id="extend_failed"),
        )
        go_on = EmptyOperator(task_id="go_on", trigger_rule=JOIN)
        stop = EmptyOperator(task_id="stop", trigger_rule=JOIN)
        route(run.output) >> [passed, failed, ask]
        ask >> [continued, extend, rejected]
        route_extended(extend.output) >> [extend_passed, extend_failed]
        [passed, continued, extend_passed] >> go_on
        [failed, rejected, extend_failed] >> stop
    return group, go_on, stop


def rollout_stages(challenger: Any, signature: Any, offline: Any) -> tuple[Any, Any, list[Any]]:
    """Adds the stages; returns (entry branch, begin task, the tasks the evidence waits for)."""

    @task.branch(task_id=ENTRY)
    def enter_rollout(
        challenger: dict[str, Any], signature: dict[str, Any], offline: dict[str, Any], **context: Any
    ) -> str:
        from tollgate.evaluation.rollout_stages import load_plan, rollout_id_for, rollout_wanted, save_record
        from tollgate.runtime import setting

        wanted, why = rollout_wanted(signature, offline, challenger["model_name"], load_plan())
        print(f"shadow and canary stages: {why}")
        context["ti"].xcom_push(key="why", value=why)  # for the UI; the evidence reads the stored one
        rollout_id = rollout_id_for(challenger["model_name"], str(challenger["version"]), context["run_id"])
        save_record(setting("tollgate_storage_root"), rollout_id, ENTRY, {"why": why, "wanted": wanted})
        return BEGIN if wanted else SKIP

    @task(task_id=BEGIN)
    def begin_rollout(
        challenger: dict[str, Any], signature: dict[str, Any], offline: dict[str, Any], **context: Any
    ) -> dict[str, Any]:
        from tollgate.evaluation.rollout_stages import begin

        return begin(challenger, signature, offline, context["run_id"], context["dag"].dag_id)

    entry = enter_rollout(challenger, signature, offline)
    begun = begin_rollout(challenger, signature, offline)
    skip = EmptyOperator(task_id=SKIP)
    done = EmptyOperator(task_id=DONE, trigger_rule=JOIN)
    entry >> [begun, skip]
    upstream: Any = begun
    stops = []
    for stage in STAGES:
        group, go_on, stop = _stage_group(stage)
        upstream >> group
        upstream = go_on
        stops.append(stop)
    upstream >> done
    return entry, begun, [skip, done, *stops]


def end_rollout_teardown(begun: Any) -> Any:
    """The teardown: whatever happened, the router ends with the champion alone."""

    @task(retries=3, retry_delay=timedelta(seconds=5))
    def end_rollout(rollout: dict[str, Any] | None) -> dict[str, Any]:
        from tollgate.evaluation.rollout_stages import end_rollout as end
        from tollgate.evaluation.rollout_stages import load_plan

        if not rollout:
            return {"ended": True, "note": "no rollout was begun"}
        outcome = end(load_plan(), rollout["rollout_id"])
        print(f"rollout {rollout['rollout_id']}: {outcome}")
        return outcome

    return end_rollout(begun).as_teardown(setups=begun)


def collect(
    context: Any, challenger: dict[str, Any]
) -> tuple[str | None, dict[str, Any] | None, dict[str, dict | None], dict[str, str | None]]:
    """(why the stages ran or not, rollout, each stage's last verdict record, each stage's approver
    choice) for the evidence.

    Choices come from Airflow's own HITL records (as the approval does), not from XComs."""
    from tollgate.config import AIRFLOW_API_CONN_ID
    from tollgate.evaluation.approval_record import ApprovalNotAsked, fetch_approval_record
    from tollgate.evaluation.rollout_stages import load_record, rollout_id_for, stored_rollout
    from tollgate.runtime import setting

    # Why the stages ran or not, the rollout and the verdicts come from storage, where the tasks wrote
    # them, never from XComs (which users can patch over the REST API): a forged PASS, a forged "no
    # champion yet" or a deleted rollout changes nothing.
    root = setting("tollgate_storage_root")
    rollout_id = rollout_id_for(challenger["model_name"], str(challenger["version"]), context["run_id"])
    entry = load_record(root, rollout_id, ENTRY) or {}
    rollout, records = stored_rollout(root, challenger, context["run_id"], STAGES)
    choices: dict[str, str | None] = {}
    for stage in STAGES:
        choices[stage] = None
        if records[stage] and records[stage]["verdict"] == "INCONCLUSIVE":
            try:
                answer = fetch_approval_record(
                    context["dag"].dag_id, context["run_id"], f"{stage}.ask", AIRFLOW_API_CONN_ID
                )
            except ApprovalNotAsked:
                continue
            if answer.response_received and answer.chosen_options:
                choices[stage] = answer.chosen_options[0]
    return entry.get("why"), rollout, records, choices
