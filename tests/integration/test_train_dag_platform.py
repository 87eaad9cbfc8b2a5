"""train_model on the real local platform (api-server, scheduler, dag-processor, triggerer, LocalExecutor,
MLflow server): a run Param injects one SIGTERM; the scheduler retries the training task, the second try
resumes from the checkpoint, and the preemption shows in the task tries, the logs and the MLflow run."""

from __future__ import annotations

import re

import pytest

from tests.integration.test_train_dag import make_data_repo
from tollgate.launch.recovery import PHASES
from tollgate.launch.recovery import from_airflow as split_from_airflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

DAG_ID = "train_model"


def test_one_injected_sigterm_gives_two_tries_and_a_resumed_run(
    local_platform, admin_client, tmp_path_factory
):
    from mlflow.tracking import MlflowClient

    repo, rev = make_data_repo(tmp_path_factory.mktemp("platform-data"), rows=6000)
    admin_client.wait_for_dag(DAG_ID, timeout=300)
    admin_client.unpause(DAG_ID)
    conf = {
        "rev": rev, "data_repo": str(repo), "epochs": 2, "batch_size": 32, "checkpoint_every": 10,
        "interruption": "sigterm_at_step", "interruption_value": 20,
    }  # fmt: skip
    run_id = admin_client.trigger(DAG_ID, conf=conf).dag_run_id
    run = admin_client.wait_for_run(DAG_ID, run_id, timeout=1200)
    tis = {
        ti.task_id: ti for ti in admin_client.task_instances.get_task_instances(DAG_ID, run_id).task_instances
    }
    states = {task: ti.state for task, ti in tis.items()}
    first_log = admin_client.task_log(DAG_ID, run_id, "train_local", 1)
    assert run.state == "success", f"{states}\n--- train_local try 1 ---\n{first_log[-4000:]}"

    train = tis["train_local"]
    assert train.try_number == 2, "the preempted try 1 was retried once"
    assert tis["train_kubernetes"].state == "skipped"
    preempted = re.search(r"TOLLGATE_PREEMPTED step=(\d+)", first_log)
    assert preempted, first_log[-4000:]
    assert "Spot preemption 1 of 5" in first_log

    second_log = admin_client.task_log(DAG_ID, run_id, "train_local", 2)
    resumed = re.search(r"TOLLGATE_RESUMED from_step=(\d+) checkpoint=(\S+)", second_log)
    assert resumed, second_log[-4000:]
    assert int(resumed.group(1)) == int(preempted.group(1)) >= 20
    # the retry reads the dataset from the local cache the first try filled (no second DVC read)
    assert re.search(r"dataset \S+ of \S+: \d+ bytes from cache", second_log), second_log[-4000:]
    assert "preemptions 1" in admin_client.task_log(DAG_ID, run_id, "publish_trained_model", 1)

    info = admin_client.xcom(DAG_ID, run_id, "publish_trained_model")
    assert info["attempts"] == 2 and info["preemptions"] == 1 and info["rev"] == rev
    mlflow_run = MlflowClient(local_platform.mlflow_url).get_run(info["mlflow_run_id"])
    assert mlflow_run.data.tags["tollgate.spot.preemptions"] == "1"
    assert mlflow_run.data.metrics["spot_preemptions"] == 1.0

    # The recovery as a user sees it, dated from the two tries' logs and records (the benchmark's split).
    recovery = split_from_airflow(admin_client, DAG_ID, run_id)
    print("recovery split (s):", {k: round(v, 3) for k, v in recovery.items()})
    assert recovery["resumed_from_step"] == recovery["preempted_at_step"] == int(preempted.group(1))
    assert all(recovery[phase] > -0.05 for phase in PHASES), recovery  # one clock, phases in order
    assert sum(recovery[phase] for phase in PHASES) == pytest.approx(recovery["total"])
    assert "Retry policy decision" in first_log  # the preemption rule matched: retried with no delay
