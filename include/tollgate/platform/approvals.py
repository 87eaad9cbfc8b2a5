"""Answering Airflow HITL approvals through the REST API, as a person does from Required Actions.

Used by ``make demo`` (which stands in for the approver and says so) and by the tests.
"""

from __future__ import annotations

import time
from typing import Any

from tollgate.platform.api import AirflowClient

# An answer given less than about a second after the task starts waiting can be lost by the
# scheduler (the task is marked failed); answers 1.5 s or later are always taken.
MIN_SECONDS_BEFORE_ANSWER = 2.0


def wait_for_pending_approval(
    client: AirflowClient, dag_id: str, run_id: str, task_id: str = "approval", timeout: float = 300.0
) -> dict[str, Any]:
    """Wait until ``task_id`` of the run awaits input, and return its HITL detail (subject, body, users)."""
    deadline = time.monotonic() + timeout
    while True:
        ti = client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        if ti["state"] in ("awaiting_input", "deferred"):
            detail = client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails")
            time.sleep(MIN_SECONDS_BEFORE_ANSWER)
            return detail
        if ti["state"] in ("skipped", "failed", "success", "upstream_failed"):
            raise RuntimeError(
                f"approval task {dag_id}/{run_id}/{task_id} ended as {ti['state']} without asking"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"approval task {dag_id}/{run_id}/{task_id} still {ti['state']} after {timeout:.0f} s"
            )
        time.sleep(1)


def answer_approval(
    client: AirflowClient, dag_id: str, run_id: str, option: str, comment: str = "", task_id: str = "approval"
) -> dict[str, Any]:
    """Answer as the client's user: ``option`` is "Approve" or "Reject". 403 if not an assigned approver."""
    return client.patch(
        f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
        {"chosen_options": [option], "params_input": {"comment": comment}},
    )
