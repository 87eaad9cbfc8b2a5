"""evaluate_and_promote and rollback_model on the real local platform (Airflow + MLflow), with real
dataset versions (git + DVC), real trained models, real signatures and real HITL answers over REST.

The outcomes run in order on one registered model, as they would in life: approve the first model,
refuse a bad one at the offline gate, a human rejection, a timeout, a tampered signature, a second
approval, a rollback to ``previous`` and a refused rollback to a tampered version.
"""

from __future__ import annotations

import json

import pytest

from tollgate.evaluation.promotion import (
    TAG_DECIDED_BY,
    TAG_DECISION,
    TAG_REJECTED,
    TAG_ROLLBACK,
    alias_version,
)
from tollgate.platform.api import AirflowAPIError, AirflowClient
from tollgate.platform.approvals import answer_approval, wait_for_pending_approval

pytestmark = pytest.mark.integration

PROMOTE = "evaluate_and_promote"
ROLLBACK = "rollback_model"
MODEL = "tollgate-ctr-promotion-test"


@pytest.fixture(scope="module")
def world(local_platform, admin_client, signed_challenger, promotion_dags):
    from mlflow import MlflowClient

    versions = {
        "first": signed_challenger(MODEL, "promo-first", seed=1),
        "degraded": signed_challenger(MODEL, "promo-degraded", seed=2, quality="degraded"),
        "second": signed_challenger(MODEL, "promo-second", seed=3),
    }
    mlflow = MlflowClient(tracking_uri=local_platform.mlflow_url, registry_uri=local_platform.mlflow_url)
    approver = AirflowClient(local_platform.airflow_url, "approver", local_platform.passwords()["approver"])
    return {
        "versions": versions,
        "mlflow": mlflow,
        "approver": approver,
        "admin": admin_client,
        "stack": local_platform,
    }


def evaluate(world, version: str, **conf) -> str:
    run = world["admin"].trigger(PROMOTE, conf={"model_name": MODEL, "version": version, **conf})
    return run["dag_run_id"]


def states(world, dag_id: str, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in world["admin"].task_instances(dag_id, run_id)}


def tags(world, version: str) -> dict[str, str]:
    return world["mlflow"].get_model_version(MODEL, version).tags


def champion(world) -> str | None:
    return alias_version(world["mlflow"], MODEL, "champion")


def mail_about(world, version: str, words: str, timeout: float = 60) -> str:
    """The approvers' mail (the local SMTP server's Maildir) whose subject names the version and ``words``."""
    import time

    from tollgate.platform.mailbox import describe, messages

    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in messages(world["stack"].mailbox)
                 if f"{MODEL} v{version}" in m.subject and words in m.subject]  # fmt: skip
        if found:
            assert found[-1].to == "approver@localhost"
            return describe(found[-1])
        got = [m.subject for m in messages(world["stack"].mailbox)]
        assert time.monotonic() < deadline, f"no mail '{words}' about v{version}; mail: {got}"
        time.sleep(0.5)


def tamper(world, version: str) -> None:
    """Change one byte of a stored file of the version, in the MLflow artifact store itself."""
    from tollgate.registry.verify import logged_model_id_of

    mv = world["mlflow"].get_model_version(MODEL, version)
    logged = world["mlflow"].get_logged_model(logged_model_id_of(mv))
    root = world["stack"].home / "mlflow" / "artifacts"
    candidates = [p for p in root.rglob("model_config.json") if logged.model_id in str(p)]
    assert candidates, f"no stored files found for logged model {logged.model_id} under {root}"
    target = candidates[0]
    data = bytearray(target.read_bytes())
    data[-2] = ord("0") if data[-2] != ord("0") else ord("1")
    target.write_bytes(bytes(data))


def test_first_model_approved_by_the_assigned_approver_only(world):
    run_id = evaluate(world, world["versions"]["first"])
    detail = wait_for_pending_approval(world["admin"], PROMOTE, run_id)
    assert [u["id"] for u in detail["assigned_users"]] == ["approver"]
    assert "| auc |" in detail["body"] and "(none yet)" in detail["body"]  # first model: no champion
    assert "spot preemption" in detail["body"] and "Signature: verified" in detail["body"]
    # The approver was told: the evidence and the direct link to answer.
    request = mail_about(world, world["versions"]["first"], "Approval needed")
    assert f"/dags/{PROMOTE}/runs/{run_id}/tasks/approval/required_actions" in request, request
    assert "auc" in request and "no answer within" in request

    with pytest.raises(AirflowAPIError) as refused:  # admin is not an assigned approver
        answer_approval(world["admin"], PROMOTE, run_id, "Approve")
    assert refused.value.status_code == 403
    assert champion(world) is None
    assert states(world, PROMOTE, run_id)["approval"] == "awaiting_input"

    answer_approval(world["approver"], PROMOTE, run_id, "Approve", comment="metrics above the floors")
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300)["state"] == "success"
    assert champion(world) == world["versions"]["first"]
    record = tags(world, world["versions"]["first"])
    assert record[TAG_DECISION] == "approved" and record[TAG_DECIDED_BY] == "approver"
    assert record["tollgate.approval.comment"] == "metrics above the floors"
    outcome = mail_about(world, world["versions"]["first"], "Approved by approver")
    assert "metrics above the floors" in outcome


def test_worse_model_rejected_by_the_offline_gate_without_asking(world):
    version = world["versions"]["degraded"]
    run_id = evaluate(world, version)
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300)["state"] == "success"
    tis = states(world, PROMOTE, run_id)
    assert (
        tis["approval"] == "skipped" and tis["reject_on_gates"] == "success" and tis["promote"] == "skipped"
    )
    rejected = tags(world, version)
    assert rejected[TAG_REJECTED] == "true" and "offline_quality" in rejected["tollgate.rejection_reasons"]
    assert champion(world) == world["versions"]["first"]


def test_human_rejection_and_timeout_leave_the_champion(world):
    version = world["versions"]["second"]
    run_id = evaluate(world, version)
    wait_for_pending_approval(world["admin"], PROMOTE, run_id)
    answer_approval(world["approver"], PROMOTE, run_id, "Reject", comment="wait for Monday's data")
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300)["state"] == "success"
    rejected = tags(world, version)
    assert rejected[TAG_REJECTED] == "true" and rejected[TAG_DECIDED_BY] == "approver"
    assert "wait for Monday's data" in rejected["tollgate.rejection_reasons"]
    assert champion(world) == world["versions"]["first"]

    run_id = evaluate(world, version, approval_timeout_minutes=0.1)  # nobody answers within 6 s
    wait_for_pending_approval(world["admin"], PROMOTE, run_id)
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300)["state"] == "success"
    timed_out = tags(world, version)
    assert timed_out[TAG_DECIDED_BY] == "timeout"
    assert "no approval answer before the response timeout" in timed_out["tollgate.rejection_reasons"]
    assert "Reject (the default) applies" in mail_about(world, version, "No answer in time")
    assert champion(world) == world["versions"]["first"]


def test_a_newer_challenger_supersedes_a_pending_approval(world):
    """v1 waits for approval when v3's run starts: v1's run ends at once, its request is closed and
    recorded on v1, the approver is told, and only v3 is asked about."""
    from tollgate.evaluation.supersede import TAG_SUPERSEDED_BY

    old, new = world["versions"]["first"], world["versions"]["second"]
    old_run = evaluate(world, old)
    wait_for_pending_approval(world["admin"], PROMOTE, old_run)
    new_run = evaluate(world, new)  # starts at once (max_active_runs > 1), not behind the old request
    ended = world["admin"].wait_for_run(PROMOTE, old_run, timeout=300)
    assert ended["state"] == "failed" and f"Superseded by {MODEL} v{new}" in ended["note"], ended
    assert states(world, PROMOTE, old_run)["approval"] not in ("awaiting_input", "deferred", "running")
    assert states(world, PROMOTE, old_run)["promote"] != "success"
    assert tags(world, old)[TAG_SUPERSEDED_BY] == new
    assert "approval request closed" in mail_about(world, old, f"superseded by v{new}")
    pending = world["admin"].get(
        f"/dags/{PROMOTE}/dagRuns/~/hitlDetails", params={"response_received": False}
    )
    waiting = {d["task_instance"]["dag_run_id"] for d in pending["hitl_details"]
               if d["task_instance"]["state"] == "awaiting_input"}  # fmt: skip
    assert old_run not in waiting

    wait_for_pending_approval(world["admin"], PROMOTE, new_run)
    answer_approval(world["approver"], PROMOTE, new_run, "Reject", comment="supersede test")
    assert world["admin"].wait_for_run(PROMOTE, new_run, timeout=300)["state"] == "success"
    assert champion(world) == old


def test_tampered_challenger_refused_then_rollbacks(world):
    second = world["versions"]["second"]
    # Approve the second model so that `previous` exists, then roll back to it.
    run_id = evaluate(world, second)
    wait_for_pending_approval(world["admin"], PROMOTE, run_id)
    answer_approval(world["approver"], PROMOTE, run_id, "Approve")
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300)["state"] == "success"
    assert champion(world) == second
    assert alias_version(world["mlflow"], MODEL, "previous") == world["versions"]["first"]

    run = world["admin"].trigger(ROLLBACK, conf={"model_name": MODEL, "reason": "second model hurts CTR"})
    assert world["admin"].wait_for_run(ROLLBACK, run["dag_run_id"], timeout=300)["state"] == "success"
    assert champion(world) == world["versions"]["first"]
    assert alias_version(world["mlflow"], MODEL, "previous") == second
    record = json.loads(tags(world, world["versions"]["first"])[TAG_ROLLBACK])
    assert record["requested_by"] == "admin" and record["reason"] == "second model hurts CTR"

    # One changed byte in the stored files of the (now previous) second model: refused everywhere.
    tamper(world, second)
    run = world["admin"].trigger(ROLLBACK, conf={"model_name": MODEL, "target": second, "reason": "try it"})
    assert world["admin"].wait_for_run(ROLLBACK, run["dag_run_id"], timeout=300)["state"] == "failed"
    assert champion(world) == world["versions"]["first"]

    run_id = evaluate(world, second)
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300)["state"] == "success"
    tis = states(world, PROMOTE, run_id)
    assert tis["approval"] == "skipped" and tis["reject_on_gates"] == "success"
    assert "signature" in tags(world, second)["tollgate.rejection_reasons"]
    assert champion(world) == world["versions"]["first"]
