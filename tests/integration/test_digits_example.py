"""The digits example end to end through the unchanged DAGs on the session platform.

A second, different model proves the DAGs are generic: 8x8 digit scans (scikit-learn's bundled
``load_digits``, nothing downloaded) are landed with the example's own faults, validated by its own GX
suite, versioned into its own data repository, trained by its own CNN through the trainer contract,
signed, gated on accuracy / macro-F1 / log loss, approved by the assigned approver and promoted, all by
``dataset_ingest`` -> ``train_model`` -> ``evaluate_and_promote`` chained by their Assets. The platform's
configured example stays ``ctr``: the run names ``digits`` (ingest Param) and the name travels with the
data. Days in 2031: newer than any click-through day of the session, so they are the newest versions.
"""

from __future__ import annotations

import time

import pytest

from tollgate import extensions
from tollgate.data import generator
from tollgate.evaluation.promotion import TAG_DECISION
from tollgate.platform.api import AirflowClient
from tollgate.platform.approvals import answer_approval, wait_for_pending_approval

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

INGEST, TRAIN, PROMOTE = "dataset_ingest", "train_model", "evaluate_and_promote"
DAY, BAD_DAY = "2031-01-01", "2031-01-02"
ROWS = 1200


@pytest.fixture(scope="module")
def digits(local_platform, admin_client):
    """A day landed by the digits upstream with a row-level fault of its own; the chain unpaused."""
    landing = admin_client.variables.get_variable("tollgate_landing_uri").value
    with extensions.using("digits"):
        generator.land(DAY, landing, fault="eight_bit_scans", rows=ROWS, share=0.02)
    for dag_id in (INGEST, TRAIN, PROMOTE):
        admin_client.wait_for_dag(dag_id, timeout=300)
        admin_client.unpause(dag_id)
    yield admin_client
    for dag_id in (INGEST, TRAIN, PROMOTE):
        admin_client.pause(dag_id)


def _ingest(client: AirflowClient, day: str) -> tuple[str, str]:
    """Trigger dataset_ingest for ``day`` naming the digits example; (run id, final state)."""
    run_id = client.trigger(INGEST, conf={"partition": day, "example": "digits"}).dag_run_id
    return run_id, client.wait_for_run(INGEST, run_id, timeout=300).state


def _next_run(client: AirflowClient, dag_id: str, after: float, match, timeout: float = 600) -> str:
    """The run of ``dag_id`` created by an Asset event after ``after`` whose first task's XCom matches."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        for run in client.dag_runs.get_dag_runs(dag_id, order_by=["-run_after"], limit=10).dag_runs:
            if run.dag_run_id in seen or run.run_after.timestamp() < after:
                continue
            seen.add(run.dag_run_id)
            if match(client.wait_for_run(dag_id, run.dag_run_id, timeout=timeout)):
                return run.dag_run_id
        time.sleep(2)
    raise TimeoutError(f"no {dag_id} run for the digits dataset after {after}")


def test_its_own_suite_quarantines_bad_scans_and_rejects_a_day_without_a_digit(tmp_path):
    """The example's GX suite through the core gate (no DAG run: the DAG's path is the one below)."""
    from tollgate.data.gate import BatchRejected, run_gate

    landing, storage_root = str(tmp_path / "landing"), str(tmp_path / "storage")
    with extensions.using("digits"):
        generator.land(DAY, landing, fault="sensor_dropout", rows=ROWS, share=0.02)
        generator.land(BAD_DAY, landing, fault="missing_digit", rows=ROWS)
        dropout = run_gate(landing, storage_root, DAY, log=lambda _: None)
        assert dropout.status == "passed_with_quarantine" and dropout.quarantined_rows == 24
        assert dropout.row_failures["expect_column_values_to_not_be_null(px_00)"] == 24
        with pytest.raises(BatchRejected) as rejected:
            run_gate(landing, storage_root, BAD_DAY, log=lambda _: None)
    # no scan of a 7 that day: the expectation, and what is missing
    assert rejected.value.outcome.batch_failures == {
        "expect_column_distinct_values_to_contain_set(digit)": "missing [7]"
    }
    assert "REJECTED by the validation gate" in str(rejected.value)


def test_digits_flow_through_the_same_dags_to_an_approved_champion(digits, local_platform):
    from mlflow import MlflowClient

    started = time.time()
    run_id, state = _ingest(digits, DAY)
    assert state == "success"
    curated = digits.xcom(INGEST, run_id, "publish")
    assert curated["example"] == "digits" and curated["data_path"] == "data/digits_curated.parquet"
    assert curated["data_repo"].endswith("data-repo-digits")  # its own versions, never mixed with ctr
    assert curated["rows"] == ROWS - 24 and curated["quarantined_rows"] == 24  # 2 % eight-bit scans

    def trains_this_version(run) -> bool:
        try:
            plan = digits.xcom(TRAIN, run.dag_run_id, "prepare_job")
        except Exception:  # skipped (a stale event) or failed before planning: not ours
            return False
        return bool(plan) and plan["dataset"]["rev"] == curated["rev"]

    train_run = _next_run(digits, TRAIN, started, trains_this_version)
    plan = digits.xcom(TRAIN, train_run, "prepare_job")
    assert plan["job"]["command"][-1] == "tollgate_examples.digits.train"
    trained = digits.xcom(TRAIN, train_run, "publish_trained_model")
    assert set(trained["metrics"]) == {"accuracy", "macro_f1", "log_loss"}
    registered = digits.xcom(TRAIN, train_run, "register_challenger")
    assert registered["model_name"] == "tollgate-digits"

    evaluate_run = _wait_for_evaluation(digits, started, registered)
    detail = wait_for_pending_approval(digits, PROMOTE, evaluate_run)
    assert "| accuracy |" in detail.body and "| macro_f1 |" in detail.body and "| log_loss |" in detail.body
    assert "Signature: verified" in detail.body
    approver = AirflowClient(local_platform.airflow_url, "approver", local_platform.passwords()["approver"])
    answer_approval(approver, PROMOTE, evaluate_run, "Approve", comment="digits read correctly")
    assert digits.wait_for_run(PROMOTE, evaluate_run, timeout=300).state == "success"

    mlflow = MlflowClient(tracking_uri=local_platform.mlflow_url, registry_uri=local_platform.mlflow_url)
    champion = mlflow.get_model_version_by_alias("tollgate-digits", "champion")
    assert champion.version == registered["version"]
    assert champion.tags[TAG_DECISION] == "approved"


def _wait_for_evaluation(client: AirflowClient, after: float, registered: dict) -> str:
    """The evaluate_and_promote run the challenger event of ``registered`` started."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for run in client.dag_runs.get_dag_runs(PROMOTE, order_by=["-run_after"], limit=10).dag_runs:
            if run.run_after.timestamp() < after:
                continue
            try:
                challenger = client.xcom(PROMOTE, run.dag_run_id, "resolve_challenger")
            except Exception:  # its first task has not pushed yet
                continue
            if (challenger or {}).get("version") == registered["version"] and (challenger or {}).get(
                "model_name"
            ) == registered["model_name"]:
                return run.dag_run_id
        time.sleep(2)
    raise TimeoutError(f"no {PROMOTE} run for {registered['model_name']} v{registered['version']}")
