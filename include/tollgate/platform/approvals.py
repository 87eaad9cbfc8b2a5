"""Answering Airflow HITL approvals through the REST API, as a person does from Required Actions.

Used by ``make demo`` (which stands in for the approver and says so) and by the tests.
"""

from __future__ import annotations

import time

from airflow_client.client import UpdateHITLDetailPayload
from airflow_client.client.models import HITLDetail, HITLDetailResponse

from tollgate.platform.api import AirflowClient

# An answer given less than about a second after the task starts waiting can be lost by the
# scheduler (the task is marked failed); answers 1.5 s or later are always taken.
MIN_SECONDS_BEFORE_ANSWER = 2.0
NOT_MAPPED = -1  # the approval task is not mapped: its map index is -1


def wait_for_pending_approval(
    client: AirflowClient, dag_id: str, run_id: str, task_id: str = "approval", timeout: float = 300.0
) -> HITLDetail:
    """Wait until ``task_id`` of the run awaits input, and return its HITL detail (subject, body, users)."""
    deadline = time.monotonic() + timeout
    while True:
        state = client.task_instances.get_task_instance(dag_id, run_id, task_id).state
        shown = getattr(state, "value", state)  # None before the scheduler gives the task a state
        if state in ("awaiting_input", "deferred"):
            detail = client.task_instances.get_hitl_detail(dag_id, run_id, task_id, NOT_MAPPED)
            time.sleep(MIN_SECONDS_BEFORE_ANSWER)
            return detail
        if state in ("skipped", "failed", "success", "upstream_failed"):
            raise RuntimeError(f"approval task {dag_id}/{run_id}/{task_id} ended as {shown} without asking")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"approval task {dag_id}/{run_id}/{task_id} still {shown} after {timeout:.0f} s"
            )
        time.sleep(1)


def answer_approval(
    client: AirflowClient, dag_id: str, run_id: str, option: str, comment: str = "", task_id: str = "approval"
) -> HITLDetailResponse:
    """Answer as the client's user: ``option`` is "Approve" or "Reject". 403 if not an assigned approver."""
    answer = UpdateHITLDetailPayload(chosen_options=[option], params_input={"comment": comment})
    return client.task_instances.update_hitl_detail(dag_id, run_id, task_id, NOT_MAPPED, answer)
