"""MLflow tracking against a real server: a preempted and resumed training run is ONE MLflow run."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tollgate.training import exit_codes
from tollgate.training.synthetic import write_parquet
from tollgate.training.testing import run_attempt

pytestmark = pytest.mark.integration


def test_resumed_attempt_continues_the_same_mlflow_run(mlflow_server, tmp_path: Path) -> None:
    data = write_parquet(tmp_path / "events.parquet", 3000, seed=11)
    args = [
        "--data-file", data,
        "--checkpoint-uri", str(tmp_path / "ckpt"),
        "--output-uri", str(tmp_path / "model"),
        "--training-run-id", "train_model__manual__2025-01-02",
        "--epochs", "2", "--batch-size", "32", "--checkpoint-every", "50",
        "--mlflow-uri", mlflow_server.url,
        "--experiment", "tollgate-ctr-test-resume",
    ]  # fmt: skip
    airflow = {
        "TOLLGATE_AIRFLOW_DAG_ID": "train_model",
        "TOLLGATE_AIRFLOW_RUN_ID": "manual__2025-01-02T00:00:00+00:00",
        "TOLLGATE_AIRFLOW_TASK_ID": "train",
        "TOLLGATE_STEP_DELAY_SECONDS": "0.02",
    }
    first = run_attempt(
        args,
        tmp_path / "a1.log",
        env={
            **airflow,
            "TOLLGATE_AIRFLOW_TRY_NUMBER": "1",
            "TOLLGATE_ATTEMPT": "1",
            "TOLLGATE_PREEMPTIONS": "0",
        },
        interrupt_at=20,
        sig=signal.SIGTERM,
    )
    assert first.returncode == exit_codes.PREEMPTED, first.tail()
    stopped_at, checkpoint, _ = first.preempted

    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("tollgate-ctr-test-resume")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "KILLED"
    assert runs[0].data.tags["tollgate.outcome"] == "preempted"

    second = run_attempt(
        args,
        tmp_path / "a2.log",
        env={
            **airflow,
            "TOLLGATE_AIRFLOW_TRY_NUMBER": "2",
            "TOLLGATE_ATTEMPT": "2",
            "TOLLGATE_PREEMPTIONS": "1",
        },
    )
    assert second.returncode == exit_codes.SUCCESS, second.tail()
    result = json.loads((tmp_path / "model" / "result.json").read_text())

    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "a resumed attempt must continue the run, not start another"
    run = runs[0]
    assert run.info.run_id == result["mlflow_run_id"] and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["tollgate.training_run_id"] == "train_model__manual__2025-01-02"
    assert tags["tollgate.airflow.dag_id"] == "train_model" and tags["tollgate.airflow.task_id"] == "train"
    assert tags["tollgate.airflow.run_id"] == "manual__2025-01-02T00:00:00+00:00"
    assert tags["tollgate.airflow.try_number"] == "2" and tags["tollgate.attempt"] == "2"
    assert tags["tollgate.preemptions"] == "1" and tags["tollgate.outcome"] == "succeeded"
    assert tags["tollgate.resumed_from_checkpoint"] == checkpoint
    assert tags["tollgate.resumed_from_step"] == str(stopped_at)
    assert run.data.params["seed"] == "42" and run.data.params["hidden_units"] == "64,32"

    # every step's loss logged exactly once across both attempts; epoch metrics at epoch ends
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, 151))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "holdout_auc")] == [75, 150]
    assert run.data.metrics["auc"] == pytest.approx(result["metrics"]["auc"])
    assert run.data.metrics["preemptions"] == 1 and run.data.metrics["steps_redone"] == 0

    # the dataset is an input of the run, with its lineage
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.source_type == "dvc"
    source = json.loads(dataset_input.dataset.source)
    assert source["content_hash"] == result["dataset"]["content_hash"]
    input_tags = {t.key: t.value for t in dataset_input.tags}
    assert input_tags["mlflow.data.context"] == "training"
    assert input_tags["dvc.content_hash"] == result["dataset"]["content_hash"]

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "trainer_output")}
    assert artifacts == {
        "trainer_output/model.pt",
        "trainer_output/model_config.json",
        "trainer_output/result.json",
    }
