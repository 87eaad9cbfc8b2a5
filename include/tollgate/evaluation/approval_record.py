"""Airflow's own record of an approval answer, and the checks ``promote`` runs on it.

``promote`` never trusts an XCom for the answer: XComs can be created and patched by any user with
edit rights over the REST API. It reads the HITL detail of the approval task — the record the
api-server wrote when the assigned approver answered, with the user taken from their login — and
accepts only: a response, exactly ``Approve``, given by a user in that request's ``assigned_users``,
on a request whose body names exactly the evidence digest being promoted.

The record is read through the public REST API (the Execution API lets a task read only its own HITL
detail) with a read-only account from Connection ``tollgate_airflow_api``: host = api-server URL,
login / password of a user allowed to read the DAG's HITL details. ``make up`` makes that account and
defines the Connection in the environment of the Airflow processes, where the UI cannot change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

APPROVE = "Approve"


def evidence_line(digest: str) -> str:
    """The line of the approval body that binds the request to one evidence digest."""
    return f"Evidence sha256: `{digest}`"


class ApprovalRefused(RuntimeError):
    """Airflow's record does not show an approval of exactly this evidence; the message says why."""


class ApprovalNotAsked(ApprovalRefused):
    """Airflow holds no approval request for the task (it never asked, or it was cleared)."""


@dataclass
class ApprovalRecord:
    subject: str
    body: str
    response_received: bool
    chosen_options: list[str] = field(default_factory=list)
    responded_by: str | None = None  # user id of the responder; None for a timeout default
    responded_by_name: str | None = None
    responded_at: str | None = None
    assigned_users: list[str] = field(default_factory=list)
    comment: str = ""

    @classmethod
    def from_api(cls, detail: dict[str, Any]) -> ApprovalRecord:
        user = detail.get("responded_by_user") or {}
        return cls(
            subject=detail.get("subject") or "",
            body=detail.get("body") or "",
            response_received=bool(detail.get("response_received")),
            chosen_options=list(detail.get("chosen_options") or []),
            responded_by=user.get("id"),
            responded_by_name=user.get("name"),
            responded_at=str(detail.get("responded_at") or "") or None,
            assigned_users=[str(u.get("id")) for u in detail.get("assigned_users") or []],
            comment=str((detail.get("params_input") or {}).get("comment") or ""),
        )


def check_approved(record: ApprovalRecord, evidence_sha256: str, where: str) -> str:
    """The approving user's id, or ApprovalRefused naming what the record shows instead."""
    if not record.response_received:
        raise ApprovalRefused(
            f"Refusing to promote: Airflow's approval record for {where} has no answer. Only an Approve "
            "given in Required Actions by an assigned approver promotes a model."
        )
    if record.chosen_options != [APPROVE]:
        raise ApprovalRefused(
            f"Refusing to promote: Airflow's approval record for {where} says {record.chosen_options} "
            f"(by {record.responded_by or 'the response timeout'}), not Approve. A value written to XCom "
            "does not count; trigger a new evaluation run to ask again."
        )
    if not record.responded_by or record.responded_by not in record.assigned_users:
        raise ApprovalRefused(
            f"Refusing to promote: the Approve in {where} was given by {record.responded_by!r}, who is not "
            f"one of the assigned approvers {record.assigned_users}."
        )
    if evidence_line(evidence_sha256) not in record.body:
        raise ApprovalRefused(
            f"Refusing to promote: the approval in {where} was given for other evidence than evidence "
            f"sha256 {evidence_sha256} being promoted (the evidence changed after the approver saw it). "
            "Trigger a new evaluation run."
        )
    return record.responded_by


def fetch_approval_record(dag_id: str, run_id: str, task_id: str, conn_id: str) -> ApprovalRecord:
    """Read the HITL detail of ``task_id`` in the run from the api-server, as the read-only account."""
    from airflow.sdk import Connection
    from airflow_client.client.exceptions import NotFoundException

    from tollgate.platform.api import AirflowAPIError, AirflowClient

    try:
        conn = Connection.get(conn_id)
    except Exception as err:  # the SDK raises its own error types; name the fix
        raise ApprovalRefused(
            f"Cannot read Airflow's approval record: Connection {conn_id!r} is not defined "
            f"({type(err).__name__}). Define it (http, host = api-server URL, login/password of a "
            "read-only user); `make up` does this for the local platform."
        ) from None
    try:
        client = AirflowClient.from_connection(conn)
    except AirflowAPIError as err:
        raise ApprovalRefused(
            f"Cannot read Airflow's approval record: login of {conn.login!r} at {conn.host} failed "
            f"(HTTP {err.status}). Fix Connection {conn_id!r}."
        ) from None
    where = f"{dag_id}/{run_id}/{task_id}"
    try:
        detail = client.task_instances.get_hitl_detail(dag_id, run_id, task_id, -1)
    except NotFoundException:
        raise ApprovalNotAsked(
            f"Refusing to promote: Airflow holds no approval request for {where} "
            "(the approval never asked, or was cleared)."
        ) from None
    except AirflowAPIError as err:
        raise ApprovalRefused(
            f"Cannot read Airflow's approval record of {where}: HTTP {err.status} {str(err.body)[:300]}"
        ) from None
    return ApprovalRecord.from_api(detail.to_dict())
