"""evaluate_and_promote's shadow and canary stages on the real local platform: real Airflow (the stage
waits defer to the real triggerer), real MLflow, real trained click-through models, a real router
process serving this module's model, replayed traffic and real HITL answers over REST.

Pass path through approval; a slow model (its delay in its signed files) rolled back by the canary and
rejected without asking anyone; a model miscalibrated on the replayed traffic newer than its holdout (its
fault in its signed files) failed by the shadow stage's quality checks on delayed labels and rejected without
asking; no traffic → INCONCLUSIVE → the approvers' branch → Extend → the stage waits again and is decided.
After each run the router serves the champion alone (the teardown).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow_client.client import VariableBody

from tests.fixtures.serving import RouterProcess
from tollgate.config import default_for
from tollgate.evaluation.canary_report import TAG_REPORT
from tollgate.evaluation.promotion import TAG_REJECTED, alias_version
from tollgate.evaluation.rollout_stages import TAG_ROLLOUT_SHA256, TAG_ROLLOUT_VERDICTS
from tollgate.platform.approvals import answer_approval, wait_for_pending_approval
from tollgate.registry import attestation
from tollgate.registry.keys import (
    DEV_DECISION_PRIVATE_KEY,
    DEV_DECISION_PUBLIC_KEY,
    DEV_PUBLIC_KEY,
    SigningKey,
)
from tollgate.serving.settings import admin_token_path

pytestmark = pytest.mark.integration

PROMOTE = "evaluate_and_promote"
WATCH = "watch_champion"
MODEL = "tollgate-ctr-rollout-test"
STAGE_TASKS = ("shadow", "canary_1", "canary_5", "canary_25")


def set_plan(admin, **overrides) -> None:
    set_variable(admin, "tollgate_rollout", {**json.loads(default_for("tollgate_rollout")), **overrides})


def set_variable(admin, key: str, value: dict) -> None:
    body = VariableBody(key=key, value=json.dumps(value))
    try:
        admin.variables.patch_variable(key, body)
    except Exception:  # not set yet
        admin.variables.post_variable(body)


@pytest.fixture(scope="module")
def world(local_platform, admin_client, signed_challenger, promotion_dags, tmp_path_factory):
    from mlflow import MlflowClient

    home = local_platform.home
    signed_challenger.pretrain(
        (MODEL, 1, "normal"),
        (MODEL, 3, "normal"),
        (MODEL, 3, "slow"),
        (MODEL, 1, "slow"),
        (MODEL, 2, "normal"),
        (MODEL, 3, "miscalibrated"),
    )
    mlflow = MlflowClient(tracking_uri=local_platform.mlflow_url, registry_uri=local_platform.mlflow_url)
    first = signed_challenger(MODEL, "rollout-first", seed=1)
    # The first champion is set up directly (its own promotion is test_promotion_dag's subject): the
    # approval and promotion attestations promote records, signed with the platform's decision key, then
    # the alias. So it is a valid rollback target whichever test ran before the watch's.
    digest = mlflow.get_model_version(MODEL, first).tags["tollgate.signature_sha256"]
    decision_key = SigningKey.from_file(home / "keys" / DEV_DECISION_PRIVATE_KEY)
    for decision, by in ((attestation.APPROVED, "approver"), (attestation.PROMOTED, "tollgate promote")):
        attestation.record(
            mlflow, attestation.Decision(decision, MODEL, first, digest, by, "e" * 64), decision_key
        )
    mlflow.set_registered_model_alias(MODEL, "champion", first)
    keys = SimpleNamespace(
        tracking_uri=local_platform.mlflow_url,
        model_keys=SimpleNamespace(public_key=home / "keys" / DEV_PUBLIC_KEY),
        decision_keys=SimpleNamespace(public_key=home / "keys" / DEV_DECISION_PUBLIC_KEY),
    )
    token = admin_token_path(home).read_text().strip()  # what the DAG's tasks present
    router = RouterProcess(
        tmp_path_factory.mktemp("rollout-dag-router"),
        keys,
        MODEL,
        TOLLGATE_ROUTER_ADMIN_TOKEN=token,
        TOLLGATE_STORAGE_ROOT=str(home / "storage"),  # the platform's: the DAG reads the log there
    )
    router.start()
    router.wait_for(lambda s: s.get("ready"), "the first champion served", timeout=180)
    set_plan(admin_client, router_url=router.url)
    yield {"mlflow": mlflow, "router": router, "first": first, "admin": admin_client, "stack": local_platform,
           "challengers": signed_challenger}  # fmt: skip
    admin_client.variables.delete_variable("tollgate_rollout")
    router.stop()


def evaluate(world, version: str) -> str:
    return world["admin"].trigger(PROMOTE, conf={"model_name": MODEL, "version": version}).dag_run_id


def states(world, run_id: str) -> dict[str, str]:
    tis = world["admin"].task_instances.get_task_instances(PROMOTE, run_id, limit=200).task_instances
    return {ti.task_id: getattr(ti.state, "value", ti.state) for ti in tis}


def diagnose(world, run_id: str) -> str:
    """Task states and the failed tasks' logs, for an assertion message."""
    found = states(world, run_id)
    lines = [json.dumps({k: str(v) for k, v in sorted(found.items())}, indent=0)]
    for task_id, state in found.items():
        if str(state) in ("failed", "up_for_retry"):
            ti = world["admin"].task_instances.get_task_instance(PROMOTE, run_id, task_id)
            raw = world["admin"].task_instances.get_log_without_preload_content(
                PROMOTE, run_id, task_id, ti.try_number, accept="application/json"
            )
            lines.append(f"--- {task_id}\n{raw.data.decode()[-4000:]}")
        if task_id.endswith((".run", ".extend")) and state == "success":
            verdict = world["admin"].xcom(PROMOTE, run_id, task_id)
            lines.append(f"--- {task_id}: {json.dumps(verdict, default=str)[:3000]}")
    from tollgate.serving.admin_client import RouterAdmin

    router = world["router"]
    lines.append(f"--- router counters {RouterAdmin(router.url).counters()}")
    lines.append(f"--- router events {json.dumps(router.status()['events'][-8:], default=str)[:3000]}")
    lines.append(f"--- router log\n{router.log.read_text(errors='replace')[-3000:]}")
    return "\n".join(lines)


def pending(world, run_id: str, task_id: str = "approval"):
    """The HITL detail of ``task_id`` once it waits; fails at once when another task waits instead."""
    import time

    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        found = states(world, run_id)
        others = [t for t, s in found.items() if s == "awaiting_input" and t != task_id]
        assert not others, f"{others} wait for input instead of {task_id}\n{diagnose(world, run_id)}"
        if found.get(task_id) == "awaiting_input" or found.get(task_id) in ("skipped", "failed", "success"):
            break
        time.sleep(2)
    try:
        return wait_for_pending_approval(world["admin"], PROMOTE, run_id, task_id=task_id, timeout=5)
    except (RuntimeError, TimeoutError) as err:
        raise AssertionError(f"{err}\n{diagnose(world, run_id)}") from None


def finished(world, run_id: str) -> None:
    try:
        state = world["admin"].wait_for_run(PROMOTE, run_id, timeout=240).state
    except TimeoutError as err:
        raise AssertionError(f"{err}\n{diagnose(world, run_id)}") from None
    assert state == "success", diagnose(world, run_id)


def champion_only(world, timeout: float = 30) -> bool:
    """The router serves the champion alone (the teardown runs beside the evidence: give it seconds)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        status = world["router"].status()
        alone = status["variants"]["challenger"] is None and status["rollout"]["mode"] == "off"
        if alone or time.monotonic() > deadline:
            return alone
        time.sleep(0.5)


def test_a_good_challenger_passes_every_stage_and_is_promoted_after_approval(world, tmp_path):
    version = world["challengers"](MODEL, "rollout-good", seed=3)
    run_id = evaluate(world, version)
    detail = pending(world, run_id)

    for stage in STAGE_TASKS:
        assert f"| {stage} | PASS |" in detail.body, detail.body
    assert "latency_shift_ms" in detail.body and "delta_auc" in detail.body
    tags = world["mlflow"].get_model_version(MODEL, version).tags
    assert tags[TAG_ROLLOUT_VERDICTS] == ", ".join(f"{s}=PASS" for s in STAGE_TASKS)
    assert tags[TAG_ROLLOUT_SHA256] in detail.body
    assert champion_only(world)  # the rollout ended before the approval (teardown)
    # The HTML canary report: an artifact of the version's run, named on its tags, linked in the approval.
    run, path = tags[TAG_REPORT].removeprefix("runs:/").split("/", 1)
    assert f"runs/{run}/artifacts/{path}" in detail.body
    page = Path(world["mlflow"].download_artifacts(run, path, str(tmp_path))).read_text()
    assert page.count("<svg") == 3 and f"v{version}" in page and "challenger (shadow)" in page

    answer_approval(_approver(world), PROMOTE, run_id, "Approve", comment="canary clean")
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=300).state == "success"
    assert alias_version(world["mlflow"], MODEL, "champion") == version
    ti = states(world, run_id)
    assert ti["end_rollout"] == "success" and ti["shadow.ask"] == "skipped"


def _approver(world):
    from tollgate.platform.api import AirflowClient

    stack = world["stack"]
    return AirflowClient(stack.airflow_url, "approver", stack.passwords()["approver"])


def test_a_slow_model_is_rolled_back_by_the_canary_and_rejected_without_asking(world):
    champion = alias_version(world["mlflow"], MODEL, "champion")
    version = world["challengers"](MODEL, "rollout-slow", seed=3, quality="slow")
    run_id = evaluate(world, version)
    assert world["admin"].wait_for_run(PROMOTE, run_id, timeout=420).state == "success", diagnose(
        world, run_id
    )

    ti = states(world, run_id)
    assert ti["shadow.passed"] == "success" and ti["canary_1.failed"] == "success"
    assert ti["approval"] == "skipped" and ti["reject_on_gates"] == "success"
    assert ti["canary_5.run"] == "skipped" and ti["end_rollout"] == "success"
    tags = world["mlflow"].get_model_version(MODEL, version).tags
    assert tags[TAG_REJECTED] == "true"
    assert "canary_1 FAIL" in tags["tollgate.rejection_reasons"]
    assert "latency" in tags["tollgate.rejection_reasons"] or "p99" in tags["tollgate.rejection_reasons"]
    assert tags[TAG_ROLLOUT_VERDICTS].startswith("shadow=PASS, canary_1=FAIL")
    assert alias_version(world["mlflow"], MODEL, "champion") == champion
    assert champion_only(world)

    # The attack: a user who can edit the run patches canary_1's verdict XCom to PASS and clears the
    # evidence. The evidence takes verdicts from the records the stage tasks stored, not from XComs.
    from airflow_client.client import XComUpdateBody

    admin = world["admin"]
    forged = {**admin.xcom(PROMOTE, run_id, "canary_1.run"), "verdict": "PASS", "reasons": []}
    admin.xcoms.update_xcom_entry(
        PROMOTE, "canary_1.run", run_id, "return_value", XComUpdateBody(value=forged, map_index=-1)
    )
    rerun(world, run_id, "assemble_evidence")
    evidence = admin.xcom(PROMOTE, run_id, "assemble_evidence")
    assert not evidence["gates_passed"], evidence
    assert evidence["rollout"]["verdicts"]["canary_1"] == "FAIL"
    assert alias_version(world["mlflow"], MODEL, "champion") == champion

    # Clearing the failed stage to draw it again: the stored verdict stands, the stage does not rerun.
    rerun(world, run_id, "canary_1.run")
    assert admin.xcom(PROMOTE, run_id, "canary_1.run")["verdict"] == "FAIL"
    assert world["router"].status()["rollout"]["mode"] == "off"  # no new rollout was started


def rerun(world, run_id: str, task_id: str) -> None:
    """Clear one task of the run (as the UI's Clear does) and wait for its next try to end."""
    import time

    from airflow_client.client import ClearTaskInstancesBody, ClearTaskInstancesBodyTaskIdsInner

    admin = world["admin"]
    # as a user clears a finished run: a clear that lands while the scheduler is marking the run finished
    # leaves the cleared tasks unscheduled in a run that stays "success" (seen once under load)
    admin.wait_for_run(PROMOTE, run_id, timeout=120)
    tries_before = admin.task_instances.get_task_instance(PROMOTE, run_id, task_id).try_number
    admin.task_instances.post_clear_task_instances(
        PROMOTE,
        ClearTaskInstancesBody(
            dry_run=False, dag_run_id=run_id, only_failed=False,
            task_ids=[ClearTaskInstancesBodyTaskIdsInner(task_id)],
        ),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        ti = admin.task_instances.get_task_instance(PROMOTE, run_id, task_id)
        if ti.try_number > tries_before and getattr(ti.state, "value", ti.state) in ("success", "failed"):
            return
        assert time.monotonic() < deadline, diagnose(world, run_id)
        time.sleep(1)


def test_a_model_miscalibrated_on_newer_traffic_fails_the_shadow_quality_checks_without_asking(world):
    """quality=miscalibrated: the champion's own network, over-confident only for users above its training's
    highest id (its signed model_config.json says so). Offline (the holdout holds no such user) it passes;
    the replay sends rows newer than the holdout, where the generator brings new users, and the shadow
    stage's checks on delayed labels find it (observed/expected positives far below 1)."""
    champion = alias_version(world["mlflow"], MODEL, "champion")
    version = world["challengers"](MODEL, "rollout-miscalibrated", seed=3, quality="miscalibrated")
    run_id = evaluate(world, version)
    finished(world, run_id)

    admin, ti = world["admin"], states(world, run_id)
    evidence = admin.xcom(PROMOTE, run_id, "assemble_evidence")
    assert evidence["gates"]["offline_quality"]["passed"], evidence["gates"]["offline_quality"]
    assert ti["shadow.failed"] == "success" and ti["shadow.ask"] == "skipped", diagnose(world, run_id)
    assert ti["approval"] == "skipped" and ti["reject_on_gates"] == "success"
    assert ti["canary_1.run"] == "skipped" and ti["end_rollout"] == "success"
    record = admin.xcom(PROMOTE, run_id, "shadow.run")
    stats = {s["name"]: s for s in record["statistics"]}
    assert stats["observed_expected"]["rejected"], record
    assert stats["observed_expected"]["high"] < 0.9, stats["observed_expected"]  # it predicts too many clicks
    assert record["labelled_pairs"] >= 200
    tags = world["mlflow"].get_model_version(MODEL, version).tags
    assert tags[TAG_REJECTED] == "true" and tags[TAG_ROLLOUT_VERDICTS].startswith("shadow=FAIL")
    assert "shadow FAIL" in tags["tollgate.rejection_reasons"]
    assert "observed_expected: worse than tolerated" in tags["tollgate.rejection_reasons"]
    assert alias_version(world["mlflow"], MODEL, "champion") == champion
    assert champion_only(world)


def test_no_traffic_is_inconclusive_and_the_approvers_extend_then_it_is_decided(world):
    """INCONCLUSIVE → the approvers' branch → Extend: the stage waits again (twice the samples and deadline),
    still gets no traffic, and is decided without a second question: the version is rejected."""
    set_plan(world["admin"], router_url=world["router"].url, replay=False, stage_deadline_s=3)
    try:
        # as good as the first champion offline (same seed, a slow twin): only the traffic is missing
        version = world["challengers"](MODEL, "rollout-quiet", seed=1, quality="slow")
        run_id = evaluate(world, version)
        detail = pending(world, run_id, "shadow.ask")
        assert "INCONCLUSIVE" in detail.subject and "too few labelled shadow pairs" in detail.body
        assert [u.id for u in detail.assigned_users] == ["approver"]
        assert "Extend" in detail.options and "Reject" in detail.options
        answer_approval(_approver(world), PROMOTE, run_id, "Extend", task_id="shadow.ask")
        finished(world, run_id)
    finally:
        set_plan(world["admin"], router_url=world["router"].url)
    admin, ti = world["admin"], states(world, run_id)
    assert ti["shadow.extend"] == "success", diagnose(world, run_id)
    assert ti["shadow.extend_failed"] == "success"
    assert ti["shadow.rejected"] == "skipped" and ti["shadow.extend_passed"] == "skipped"
    assert ti["approval"] == "skipped" and ti["reject_on_gates"] == "success"
    extended = admin.xcom(PROMOTE, run_id, "shadow.extend")
    assert extended["verdict"] == "INCONCLUSIVE" and extended["wait"] == "deadline", extended
    tries = admin.task_instances.get_task_instance(PROMOTE, run_id, "shadow.extend").try_number
    log = admin.task_instances.get_log_without_preload_content(
        PROMOTE, run_id, "shadow.extend", tries, accept="application/json"
    ).data.decode()
    assert "'shadow_ok': 400" in log  # it waited for twice the labelled pairs of a first look
    reasons = world["mlflow"].get_model_version(MODEL, version).tags["tollgate.rejection_reasons"]
    assert "shadow INCONCLUSIVE" in reasons and "approvers chose Extend" in reasons
    assert champion_only(world)


def test_a_stage_failed_by_hand_mid_wait_still_ends_with_the_champion_alone(world):
    """An operator marks the waiting stage failed (as the UI's "Mark as failed" does): the teardown runs,
    the router serves the champion alone and nothing is promoted."""
    import time

    from airflow_client.client import PatchTaskInstanceBody, TaskInstanceState

    champion = alias_version(world["mlflow"], MODEL, "champion")
    set_plan(world["admin"], router_url=world["router"].url, replay=False, stage_deadline_s=120)
    try:
        # a version of its own: the router refuses a version the gates rejected (the miscalibrated one)
        version = world["challengers"](MODEL, "rollout-cleared", seed=2)
        run_id = evaluate(world, version)
        deadline = time.monotonic() + 240
        while states(world, run_id).get("shadow.run") != "deferred":
            assert time.monotonic() < deadline, diagnose(world, run_id)
            time.sleep(1)
        assert world["router"].status()["rollout"]["mode"] == "shadow"
        world["admin"].task_instances.patch_task_instance(
            PROMOTE, run_id, "shadow.run", PatchTaskInstanceBody(new_state=TaskInstanceState.FAILED)
        )
        state = world["admin"].wait_for_run(PROMOTE, run_id, timeout=240).state
    finally:
        set_plan(world["admin"], router_url=world["router"].url)
    assert state == "failed"
    assert states(world, run_id)["end_rollout"] == "success", diagnose(world, run_id)
    assert champion_only(world)
    assert alias_version(world["mlflow"], MODEL, "champion") == champion


def watch_runs(world) -> str:
    """Every watch_champion run with its task states and the failed tasks' log tails."""
    admin, lines = world["admin"], []
    for run in admin.dag_runs.get_dag_runs(WATCH, limit=20).dag_runs:
        tis = admin.task_instances.get_task_instances(WATCH, run.dag_run_id, limit=50).task_instances
        lines.append(f"{run.dag_run_id} {run.state}: " + ", ".join(f"{t.task_id}={t.state}" for t in tis))
        for t in tis:
            if str(getattr(t.state, "value", t.state)) in ("failed", "up_for_retry", "running", "deferred"):
                raw = admin.task_instances.get_log_without_preload_content(
                    WATCH, run.dag_run_id, t.task_id, max(t.try_number, 1), accept="application/json"
                )
                lines.append(f"--- {t.task_id}\n{raw.data.decode()[-3000:]}")
    return "\n".join(lines) or "no runs"


def serve_champion_traffic(world, champion: str, requests: int = 200) -> None:
    """Requests the router serves with ``champion`` as the champion: the watch's baseline of it."""
    import pandas as pd

    from tollgate import extensions
    from tollgate.serving.replay import replay

    world["router"].wait_for(
        lambda s: (s["variants"]["champion"] or {}).get("version") == champion,
        "the champion served",
        timeout=60,
    )
    rows = extensions.load("ctr").dataset.generate(pd.Timestamp("2026-03-02").date(), rows=requests, seed=5)
    result = replay(
        world["router"].url, rows, storage_root=str(world["stack"].home / "storage"), rate=200,
        max_requests=requests, max_seconds=60,
    )  # fmt: skip
    assert result.ok == requests, result


def test_a_champion_slower_after_promotion_is_rolled_back_by_the_watch(world):
    """A slow version whose stages did not run (its rollout named no router) passes offline and is approved;
    once it serves everything, watch_champion finds it slower than previous and rolls back by itself."""
    import time

    from tollgate.evaluation.champion_watch import TAG_WATCH
    from tollgate.evaluation.promotion import TAG_ROLLBACK

    admin, mlflow = world["admin"], world["mlflow"]
    previous = alias_version(mlflow, MODEL, "champion")
    admin.wait_for_dag(WATCH)
    admin.unpause(WATCH)
    set_plan(admin, router_url="http://127.0.0.1:9")  # no router for the stages: skipped (not required)
    watch = {**json.loads(default_for("tollgate_watch")), "router_url": world["router"].url}
    set_variable(admin, "tollgate_watch", watch)
    try:
        serve_champion_traffic(world, previous)  # previous's baseline, whichever tests ran before
        version = world["challengers"](MODEL, "watch-slow", seed=1, quality="slow")
        run_id = evaluate(world, version)
        pending(world, run_id)
        answer_approval(_approver(world), PROMOTE, run_id, "Approve", comment="offline clean")
        finished(world, run_id)
        assert alias_version(mlflow, MODEL, "champion") == version

        deadline, verdict = time.monotonic() + 300, None
        while verdict is None:
            assert time.monotonic() < deadline, f"no {WATCH} run judged v{version}\n{watch_runs(world)}"
            for run in admin.dag_runs.get_dag_runs(WATCH, limit=20).dag_runs:
                if getattr(run.state, "value", run.state) not in ("success", "failed"):
                    continue
                try:
                    record = admin.xcom(WATCH, run.dag_run_id, "judge")
                except Exception:  # skipped or failed before the judge: not this promotion's watch
                    continue
                if record["version"] == version:
                    verdict, watch_run = record, run
            time.sleep(2)
    finally:
        set_plan(admin, router_url=world["router"].url)
        admin.variables.delete_variable("tollgate_watch")
        admin.pause(WATCH)
    assert verdict["verdict"] == "FAIL" and verdict["previous"] == previous, verdict
    assert any("latency" in r or "p99" in r for r in verdict["reasons"]), verdict["reasons"]
    assert getattr(watch_run.state, "value", watch_run.state) == "success"
    # Rolled back by itself, through the attested path, recorded on both versions with the reasons.
    assert alias_version(mlflow, MODEL, "champion") == previous
    tags = mlflow.get_model_version(MODEL, previous).tags
    assert attestation.tag_for(attestation.AUTOMATIC_ROLLBACK) in tags
    record = json.loads(tags[TAG_ROLLBACK])
    assert record["from_version"] == version and "watch_champion" in record["reason"]
    assert json.loads(mlflow.get_model_version(MODEL, version).tags[TAG_ROLLBACK])["to_version"] == previous
    assert mlflow.get_model_version(MODEL, version).tags[TAG_WATCH].startswith("FAIL")
    # The router follows the alias back to previous.
    world["router"].wait_for(
        lambda s: (s["variants"]["champion"] or {}).get("version") == previous, "previous served", timeout=60
    )
