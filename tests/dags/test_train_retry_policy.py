"""train_model's training tasks: a spot preemption retries at once, a real failure after the task's delay."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.dags

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_train_model_retries_a_preemption_at_once_and_a_failure_after_its_delay():
    """The policy on the DAG's training tasks, evaluated as the task runner does on a failed try."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.retry_policy import RetryAction

    from tollgate.launch.attempts import TrainingAttemptFailed, TrainingPreempted

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "train_model.py")).dags["train_model"]
    for task_id in ("train_local", "train_kubernetes"):
        task = dag.get_task(task_id)
        assert task.retry_delay == timedelta(seconds=5)
        preempted = task.retry_policy.evaluate(TrainingPreempted("spot"), try_number=1, max_tries=8)
        assert preempted.action == RetryAction.RETRY and preempted.retry_delay == timedelta(0)
        failed = task.retry_policy.evaluate(TrainingAttemptFailed("oom"), try_number=1, max_tries=8)
        assert failed.action == RetryAction.DEFAULT and failed.retry_delay is None  # the task's 5 s
        # what the scheduler receives: 0.0 seconds is sent (None would mean "use retry_delay")
        assert task.retry_policy.serialize()["rules"][0]["retry_delay"] == 0.0
