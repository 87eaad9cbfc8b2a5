"""evaluate_and_promote and rollback_model on the real local platform (Airflow + MLflow), with real
dataset versions (git + DVC), real trained models, real signatures and real HITL answers over REST.

The outcomes run in order on one registered model, as they would in life: approve the first model,
refuse a bad one at the offline gate, a human rejection, a timeout, a tampered signature, a second
approval, a rollback to ``previous`` and a refused rollback to a tampered version. The attacks of an
ordinary Airflow user and of anyone who reaches MLflow run on the same platform: a forged approval
XCom, files changed between the signature gate and the move, a rollback to a version that never passed
the gates, and an alias and approval written directly into the registry.
"""

from __future__ import annotations

import json

import pytest
from airflow_client.client import (
    ClearTaskInstancesBody,
    ClearTaskInstancesBodyTaskIdsInner,
    PoolPatchBody,
    XComUpdateBody,
)

from tollgate.evaluation.promotion import (
    TAG_DECIDED_BY,
    TAG_DECISION,
    TAG_REJECTED,
    TAG_ROLLBACK,
    alias_version,
)
from tollgate.platform.api import AirflowAPIError, AirflowClient
from tollgate.platform.approvals import answer_approval, wait_for_pending_approval
from tollgate.registry import attestation

pytestmark = pytest.mark.integration

PROMOTE = "evaluate_and_promote"
ROLLBACK = "rollback_model"
MODEL = "tollgate-ctr-promotion-test"


@pytest.fixture(scope="module")
def world(local_platform, admin_client, signed_challenger, promotion_dags):
    from mlflow import MlflowClient

    signed_challenger.pretrain((MODEL, 1, "normal"), (MODEL, 2, "degraded"), (MODEL, 3, "normal"))
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
    return run.dag_run_id


def states(world, dag_id: str, run_id: str) -> dict[str, str]:
    tis = world["admin"].task_instances.get_task_instances(dag_id, run_id, limit=200).task_instances
    return {ti.task_id: ti.state for ti in tis}


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


def attested(world, version: str, decision: str) -> attestation.AttestationCheck:
    """The version's ``decision`` attestation checked against the platform's decision key."""
    from tollgate.registry.keys import DEV_DECISION_PUBLIC_KEY, load_trusted_keys

    trusted = load_trusted_keys(str(world["stack"].home / "keys" / DEV_DECISION_PUBLIC_KEY))
    mv = world["mlflow"].get_model_version(MODEL, version)
    return attestation.check_version(
        mv.tags,
        trusted,
        decision=decision,
        model_name=MODEL,
        version=version,
        signature_sha256=mv.tags.get("tollgate.signature_sha256"),
    )


def aliases(world) -> dict[str, str | None]:
    return {a: alias_version(world["mlflow"], MODEL, a) for a in ("champion", "previous", "challenger")}


def wait_for_task(world, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...]) -> str:
    import time

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = world["admin"].task_instances.get_task_instance(dag_id, run_id, task_id).state
        if state in states:
            return state
        time.sleep(1)
    raise TimeoutError(f"{dag_id}/{run_id}/{task_id} still {state}")


def failed_task_log(world, dag_id: str, run_id: str, task_id: str) -> str:
    """The log of the task's latest try (it must have run and failed)."""
    ti = world["admin"].task_instances.get_task_instance(dag_id, run_id, task_id)
    assert ti.state == "failed", ti
    raw = world["admin"].task_instances.get_log_without_preload_content(
        dag_id, run_id, task_id, ti.try_number, accept="application/json"
    )
    return raw.data.decode()  # every field, the exception's message (error_detail) included


def test_first_model_approved_by_the_assigned_approver_only(world):
    run_id = evaluate(world, world["versions"]["first"])
    detail = wait_for_pending_approval(world["admin"], PROMOTE, run_id)
    assert [u.id for u in detail.assigned_users] == ["approver"]
    assert "| auc |" in detail.body and "(none yet)" in detail.body  # first model: no champion
    # the fixture trains in one uninterrupted attempt: the body carries those counts, not just the words
    assert "Training: 1 attempt(s), 0 spot preemption(s)" in detail.body
    assert "Signature: verified" in detail.body
    # The approver was told: the evidence and the direct link to answer.
    request = mail_about(world, world["versions"]["first"], "Approval needed")
    assert f"/dags/{PROMOTE}/runs/{run_id}/tasks/approval/required_actions" in request, request
    assert "auc" in request and "no answer within" in request

    with pytest.raises(AirflowAPIError) as refused:  # admin is not an assigned approver
        answer_approval(world["admin"], PROMOTE, run_id, "Approve")
    assert refused.value.status == 403
    assert champion(world) is None
    assert states(world, PROMOTE, run_id)["approval"] == "awaiting_input"

    answer_approval(world["approver"], PROMOTE, run_id, "Approve", comment="metrics above the floors")
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300).state == "success"
    assert champion(world) == world["versions"]["first"]
    record = tags(world, world["versions"]["first"])
    assert record[TAG_DECISION] == "approved" and record[TAG_DECIDED_BY] == "approver"
    assert record["tollgate.approval.comment"] == "metrics above the floors"
    approval = attested(world, world["versions"]["first"], attestation.APPROVED)
    assert approval.ok, approval.problems
    assert approval.predicate["decided_by"] == "approver"
    assert approval.predicate["evidence_sha256"] == record["tollgate.approval.evidence_sha256"]
    assert attested(world, world["versions"]["first"], attestation.PROMOTED).ok
    outcome = mail_about(world, world["versions"]["first"], "Approved by approver")
    assert "metrics above the floors" in outcome


def test_worse_model_rejected_by_the_offline_gate_without_asking(world):
    version = world["versions"]["degraded"]
    run_id = evaluate(world, version)
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300).state == "success"
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
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300).state == "success"
    rejected = tags(world, version)
    assert rejected[TAG_REJECTED] == "true" and rejected[TAG_DECIDED_BY] == "approver"
    assert "wait for Monday's data" in rejected["tollgate.rejection_reasons"]
    assert champion(world) == world["versions"]["first"]
    assert attested(world, version, attestation.REJECTED).predicate["decided_by"] == "approver"

    # The attack (path 1): an ordinary user (the approver's `user` role) forges the approval's XCom
    # answer to Approve, removes the skip marker so Airflow runs promote, and clears promote.
    attacker = world["approver"]
    forged = {"chosen_options": ["Approve"], "params_input": {"comment": "forged"},
              "responded_by_user": {"id": "approver", "name": "approver"}, "responded_at": "now"}  # fmt: skip
    attacker.xcoms.update_xcom_entry(
        PROMOTE, "approval", run_id, "answer", XComUpdateBody(value=forged, map_index=-1)
    )
    attacker.xcoms.delete_xcom_entry(PROMOTE, "approval", run_id, "skipmixin_key", map_index=-1)
    before = (aliases(world), tags(world, version))
    attacker.task_instances.post_clear_task_instances(
        PROMOTE,
        ClearTaskInstancesBody(
            dry_run=False,
            task_ids=[ClearTaskInstancesBodyTaskIdsInner("promote")],
            dag_run_id=run_id,
            only_failed=False,
        ),
    )
    # the run's own state follows its leaves (the rejection recorder succeeded): watch promote itself
    assert wait_for_task(world, PROMOTE, run_id, "promote", ("failed", "success", "skipped")) == "failed"
    log = failed_task_log(world, PROMOTE, run_id, "promote")  # promote ran, and refused
    assert "Refusing to promote" in log and "['Reject']" in log and "XCom" in log
    assert (aliases(world), tags(world, version)) == before

    run_id = evaluate(world, version, approval_timeout_minutes=0.1)  # nobody answers within 6 s
    wait_for_pending_approval(world["admin"], PROMOTE, run_id)
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300).state == "success"
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
    # v3's supersede step ends v1's run and returns once v1's state holds (Airflow may finish a run whose
    # teardown was pending by its leaves, i.e. as success: the step fails it again)
    assert wait_for_task(world, PROMOTE, new_run, "supersede_older_runs", ("success", "failed")) == "success"
    ended = world["admin"].wait_for_run(PROMOTE, old_run, timeout=300)
    assert ended.state == "failed" and f"Superseded by {MODEL} v{new}" in ended.note, ended
    assert states(world, PROMOTE, old_run)["approval"] not in ("awaiting_input", "deferred", "running")
    assert states(world, PROMOTE, old_run)["promote"] != "success"
    assert tags(world, old)[TAG_SUPERSEDED_BY] == new
    assert "approval request closed" in mail_about(world, old, f"superseded by v{new}")
    pending = world["admin"].task_instances.get_hitl_details(PROMOTE, "~", response_received=False)
    waiting = {d.task_instance.dag_run_id for d in pending.hitl_details
               if d.task_instance.state == "awaiting_input"}  # fmt: skip
    assert old_run not in waiting

    wait_for_pending_approval(world["admin"], PROMOTE, new_run)
    answer_approval(world["approver"], PROMOTE, new_run, "Reject", comment="supersede test")
    assert world["admin"].wait_for_run(PROMOTE, new_run, timeout=300).state == "success"
    assert champion(world) == old


def test_rollbacks_only_to_approved_versions_and_registry_writes_do_not_count(world):
    first, second, degraded = (world["versions"][k] for k in ("first", "second", "degraded"))
    # Path 7, two racing moves: the approved promotion of the second model and a rollback to the first
    # are both ready to move aliases at once (held back by emptying the alias pool, then released).
    admin, pool = world["admin"], "tollgate_alias_moves"
    assert admin.pools.get_pool(pool).slots == 1
    admin.pools.patch_pool(pool, PoolPatchBody(pool=pool, slots=0, include_deferred=False))
    try:
        run_id = evaluate(world, second)
        wait_for_pending_approval(admin, PROMOTE, run_id)
        answer_approval(world["approver"], PROMOTE, run_id, "Approve")
        rollback_run = admin.trigger(
            ROLLBACK, conf={"model_name": MODEL, "target": first, "reason": "second model hurts CTR"}
        ).dag_run_id
        assert wait_for_task(world, PROMOTE, run_id, "promote", ("scheduled",)) == "scheduled"
        assert wait_for_task(world, ROLLBACK, rollback_run, "swap_aliases", ("scheduled",)) == "scheduled"
        assert champion(world) == first  # nothing moved while both wait for the slot
    finally:
        admin.pools.patch_pool(pool, PoolPatchBody(pool=pool, slots=1, include_deferred=False))
    assert admin.wait_for_run(PROMOTE, run_id, timeout=300).state == "success"
    rolled_back = admin.wait_for_run(ROLLBACK, rollback_run, timeout=300).state
    moves = [
        admin.task_instances.get_task_instance(dag, run, task)
        for dag, run, task in ((PROMOTE, run_id, "promote"), (ROLLBACK, rollback_run, "swap_aliases"))
    ]
    assert moves[0].end_date <= moves[1].start_date or moves[1].end_date <= moves[0].start_date
    if moves[0].start_date < moves[1].start_date:  # promote, then the rollback undid it
        assert rolled_back == "success"
    else:  # the rollback found the first model already champion and refused; then promote moved
        assert rolled_back == "failed"
        assert "already the champion" in failed_task_log(world, ROLLBACK, rollback_run, "swap_aliases")
        assert (champion(world), alias_version(world["mlflow"], MODEL, "previous")) == (second, first)
        run = admin.trigger(ROLLBACK, conf={"model_name": MODEL, "reason": "second model hurts CTR"})
        assert admin.wait_for_run(ROLLBACK, run.dag_run_id, timeout=300).state == "success"
    assert champion(world) == first
    assert alias_version(world["mlflow"], MODEL, "previous") == second
    record = json.loads(tags(world, first)[TAG_ROLLBACK])
    assert record["requested_by"] == "admin" and record["reason"] == "second model hurts CTR"
    assert attested(world, first, attestation.ROLLBACK).predicate["decided_by"] == "admin"

    # The attack (paths 3 and 12), by anyone who reaches MLflow: write an approval record and copy the
    # first model's signed approval and promotion onto the degraded model the offline gate rejected,
    # then ask rollback_model to make it the champion. Refused: the attestations name another version.
    mlflow, source = world["mlflow"], tags(world, first)
    for key in ("tollgate.approval.decision", "tollgate.approval.by", "tollgate.approval.evidence_sha256"):
        mlflow.set_model_version_tag(MODEL, degraded, key, source[key])
    for decision in (attestation.APPROVED, attestation.PROMOTED):
        mlflow.set_model_version_tag(
            MODEL, degraded, attestation.tag_for(decision), source[attestation.tag_for(decision)]
        )
    mlflow.delete_model_version_tag(MODEL, degraded, TAG_REJECTED)
    before = (aliases(world), tags(world, degraded))
    run = world["admin"].trigger(ROLLBACK, conf={"model_name": MODEL, "target": degraded, "reason": "try it"})
    assert world["admin"].wait_for_run(ROLLBACK, run.dag_run_id, timeout=300).state == "failed"
    log = failed_task_log(world, ROLLBACK, run.dag_run_id, "verify_target")
    assert "only a version that was approved and promoted" in log and "copied from another version" in log
    assert (aliases(world), tags(world, degraded)) == before

    # Set champion directly in MLflow: the registry view marks it unauthorised (no valid approval).
    from tollgate.registry.ui import version_rows

    mlflow.set_registered_model_alias(MODEL, "champion", degraded)
    try:
        rows = {
            row["version"]: row
            for row in version_rows(
                {
                    "model_name": MODEL,
                    "tracking_uri": world["stack"].mlflow_url,
                    "mlflow_ui_url": world["stack"].mlflow_url,
                    "trusted_keys": str(world["stack"].home / "keys" / "tollgate-dev-signing.pub"),
                    "decision_keys": str(world["stack"].home / "keys" / "tollgate-dev-decision.pub"),
                }
            )
        }
    finally:
        mlflow.set_registered_model_alias(MODEL, "champion", first)  # the operator puts it back
    assert rows[degraded]["unauthorised_aliases"] == ["champion"]
    assert "copied from another version" in " ".join(rows[degraded]["approval"]["problems"])
    assert rows[first]["approval"]["ok"] and rows[first]["unauthorised_aliases"] == []

    # The attack (path 2): the files change between the signature gate and the move. The approver sees
    # evidence that passed every gate and approves; promote verifies again at the move and refuses.
    run_id = evaluate(world, second)
    wait_for_pending_approval(world["admin"], PROMOTE, run_id)
    tamper(world, second)
    before = (aliases(world), tags(world, second))
    answer_approval(world["approver"], PROMOTE, run_id, "Approve")
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300).state == "failed"
    log = failed_task_log(world, PROMOTE, run_id, "promote")
    assert "no longer verifies at the moment of the move" in log
    assert (aliases(world), tags(world, second)) == before

    # The tampered (now previous) second model: a rollback to it is refused too.
    run = world["admin"].trigger(ROLLBACK, conf={"model_name": MODEL, "target": second, "reason": "try it"})
    assert world["admin"].wait_for_run(ROLLBACK, run.dag_run_id, timeout=300).state == "failed"
    assert champion(world) == first
