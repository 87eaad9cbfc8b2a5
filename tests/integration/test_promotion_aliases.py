"""Alias moves and decision records against a real MLflow server (versions registered from plain
artifacts: promotion itself does not verify; the DAG verifies before calling it)."""

from __future__ import annotations

import json
import threading

import pytest

from tollgate.evaluation.promotion import (
    TAG_DECIDED_BY,
    TAG_DECISION,
    TAG_EVIDENCE_SHA256,
    TAG_REJECTED,
    TAG_ROLLBACK,
    DecisionRecord,
    alias_version,
    evidence_digest,
    promote,
    reject,
    rollback,
)

pytestmark = pytest.mark.integration


@pytest.fixture()
def registry(mlflow_server, request):
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    name = f"promo-{request.node.name[:40]}"
    client.create_registered_model(name)
    mlflow.set_tracking_uri(mlflow_server.url)
    versions = []
    with mlflow.start_run() as run:
        mlflow.log_text("weights", "model/weights.txt")
    for _ in range(3):
        versions.append(
            client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id).version
        )
    return client, name, [str(v) for v in versions]


def record(decision: str = "approved", by: str = "approver") -> DecisionRecord:
    return DecisionRecord(decision, by, "looks good", evidence_digest({"version": 1}))


def test_first_promotion_then_second_keeps_previous(registry):
    client, name, (v1, v2, _) = registry
    client.set_registered_model_alias(name, "challenger", v1)
    assert promote(client, name, v1, record()) == {"champion": v1, "previous": None}
    assert alias_version(client, name, "challenger") is None  # the challenger alias is consumed
    client.set_registered_model_alias(name, "challenger", v2)
    assert promote(client, name, v2, record()) == {"champion": v2, "previous": v1}
    tags = client.get_model_version(name, v2).tags
    assert tags[TAG_DECISION] == "approved" and tags[TAG_DECIDED_BY] == "approver"
    assert tags[TAG_EVIDENCE_SHA256] == evidence_digest({"version": 1})
    # promoting again is a no-op, not a second move
    assert promote(client, name, v2, record()) == {"champion": v2, "previous": v1}


def test_champion_never_missing_while_it_moves(registry):
    client, name, (v1, v2, v3) = registry
    promote(client, name, v1, record())
    seen: list[str | None] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(alias_version(client, name, "champion"))

    thread = threading.Thread(target=reader)
    thread.start()
    for version in (v2, v3, v2):
        promote(client, name, version, record())
    stop.set()
    thread.join()
    assert seen and None not in seen


def test_reject_tags_reasons_and_leaves_champion(registry):
    client, name, (v1, v2, _) = registry
    promote(client, name, v1, record())
    client.set_registered_model_alias(name, "challenger", v2)
    outcome = reject(
        client,
        name,
        v2,
        ["offline_quality: AUC 0.5 is below the floor"],
        record("rejected", "tollgate-gates"),
    )
    assert outcome["champion"] == v1
    tags = client.get_model_version(name, v2).tags
    assert tags[TAG_REJECTED] == "true" and "AUC 0.5" in tags["tollgate.rejection_reasons"]
    assert alias_version(client, name, "challenger") is None
    assert alias_version(client, name, "champion") == v1


def test_rollback_swaps_and_records_on_both_versions(registry):
    client, name, (v1, v2, _) = registry
    promote(client, name, v1, record())
    promote(client, name, v2, record())
    done = rollback(client, name, v1, "admin", "v2 hurts revenue", request_id="run-1")
    assert (done.from_version, done.to_version) == (v2, v1)
    assert alias_version(client, name, "champion") == v1
    assert alias_version(client, name, "previous") == v2
    for version in (v1, v2):
        entry = json.loads(client.get_model_version(name, version).tags[TAG_ROLLBACK])
        assert entry["requested_by"] == "admin" and entry["reason"] == "v2 hurts revenue"
    # a task retry of the same request is accepted; a new request to the same target is refused
    assert rollback(client, name, v1, "admin", "v2 hurts revenue", request_id="run-1").to_version == v1
    with pytest.raises(ValueError, match="already the champion"):
        rollback(client, name, v1, "admin", "again", request_id="run-2")
