"""What the train_model DAG's first task decides: the dataset version and the launch plan."""

from __future__ import annotations

import subprocess

import pytest

from tollgate.config import default_for
from tollgate.launch.job import training_run_id
from tollgate.launch.local import Interruption
from tollgate.launch.pipeline import PLAN_SETTINGS, DatasetNotFound, build_plan, resolve_dataset

pytestmark = pytest.mark.unit

EVENT = {
    "rev": "data-2026-03-02",
    "content_hash": "ab" * 32,
    "data_repo": "/repos/ctr",
    "data_path": "d.parquet",
}
RUN_ID = "asset_triggered__2026-03-02T00:00:00+00:00"


def test_dataset_precedence_param_then_triggering_then_latest_event():
    common = {"data_repo": "/var/repo", "triggering_extra": EVENT, "latest_extra": {"rev": "older"}}
    assert resolve_dataset(rev_param="v7", **common)["rev"] == "v7"
    from_event = resolve_dataset(rev_param="latest", **common)
    assert from_event == {**EVENT, "source": "triggering_event"}
    latest = resolve_dataset(rev_param="latest", data_repo="/var/repo", triggering_extra=None,
                             latest_extra={"rev": "older"})  # fmt: skip
    assert (latest["rev"], latest["data_repo"], latest["source"]) == ("older", "/var/repo", "latest_event")


def test_dataset_falls_back_to_the_data_repo_head(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "v1"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    found = resolve_dataset(rev_param="latest", triggering_extra=None, latest_extra=None, data_repo=str(repo))
    assert (found["rev"], found["source"]) == (head, "data_repo_head")


def test_no_dataset_says_how_to_get_one(tmp_path):
    with pytest.raises(DatasetNotFound, match="dataset_ingest"):
        resolve_dataset(rev_param="latest", triggering_extra=None, latest_extra=None, data_repo=str(tmp_path))


def _settings(**changes: str) -> dict[str, str]:
    values = {name: default_for(name) for name in PLAN_SETTINGS}
    values["tollgate_storage_root"] = "s3://tollgate-prod/"
    values.update(changes)
    return values


def test_plan_places_checkpoints_and_model_under_the_storage_root():
    plan = build_plan(dag_id="train_model", run_id=RUN_ID, params={"epochs": 4}, settings=_settings(),
                      dataset=EVENT, mlflow_uri="http://mlflow:5000")  # fmt: skip
    run = training_run_id("train_model", RUN_ID)
    assert plan.job.checkpoint_uri == f"s3://tollgate-prod/checkpoints/{run}"
    assert plan.job.output_uri == f"s3://tollgate-prod/models/{run}"
    assert plan.job.trainer_args["data-rev"] == "data-2026-03-02"
    assert plan.job.trainer_args["epochs"] == 4
    assert plan.job.grace_seconds == 30
    assert (plan.backend, plan.budgets.preemptions, plan.budgets.failures) == ("local", 5, 1)
    assert plan.interruption is None
    assert plan.dataset == EVENT


def test_plan_params_override_variable_budgets_and_inject_interruptions():
    params = {"preemption_budget": 2, "failure_budget": 0, "interruption": "sigterm_after_seconds",
              "interruption_value": 12, "interruption_sigkill": True}  # fmt: skip
    settings = _settings(tollgate_launch_backend="kubernetes")
    plan = build_plan(dag_id="d", run_id="r", params=params, settings=settings, dataset=EVENT, mlflow_uri="")
    assert (plan.backend, plan.budgets.preemptions, plan.budgets.failures) == ("kubernetes", 2, 0)
    assert plan.interruption == Interruption(after_seconds=12, sigkill=True)


@pytest.mark.parametrize(
    ("params", "settings", "message"),
    [
        ({"preemption_budget": 10}, {}, "exceeds the training task's 10 retries"),
        ({}, {"tollgate_preemption_budget": "five"}, "tollgate_preemption_budget must be a whole number"),
        ({}, {"tollgate_launch_backend": "ecs"}, "tollgate_launch_backend"),
        ({}, {"tollgate_training_resources": "4 cpus"}, "tollgate_training_resources"),
    ],
)
def test_plan_errors_name_the_setting_to_fix(params, settings, message):
    with pytest.raises(ValueError, match=message):
        build_plan(dag_id="d", run_id="r", params=params, settings=_settings(**settings), dataset=EVENT,
                   mlflow_uri="")  # fmt: skip
