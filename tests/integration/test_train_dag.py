"""The train_model DAG end to end with ``dag.test()``: a real git + DVC data repository, the real trainer as
a child process, a real MLflow server, real signals. ``dag.test()`` runs Airflow's retries itself (the
retry delay is seconds), so the preemption path is the one production takes: try 1 is interrupted, try 2
resumes from the checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tollgate.data.schema import CURATED_PATH
from tollgate.launch import ledger as ledgers
from tollgate.launch.job import training_run_id
from tollgate.training.synthetic import write_parquet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = {"epochs": 2, "batch_size": 32, "checkpoint_every": 10, "seed": 7}  # 150 steps on 3,000 rows


def _run(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "tollgate-tests", "GIT_AUTHOR_EMAIL": "tests@tollgate.invalid",
        "GIT_COMMITTER_NAME": "tollgate-tests", "GIT_COMMITTER_EMAIL": "tests@tollgate.invalid",
    }  # fmt: skip
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()


def make_data_repo(root: Path, rows: int = 3000) -> tuple[Path, str]:
    """A git + DVC data repository with one curated dataset version pushed to a local DVC remote."""
    repo = root / "data-repo"
    (repo / Path(CURATED_PATH).parent).mkdir(parents=True)
    _run("git", "init", "-q", "-b", "main", cwd=repo)
    _run(str(BIN / "dvc"), "init", "-q", cwd=repo)
    _run(str(BIN / "dvc"), "remote", "add", "-d", "local", str(root / "dvc-remote"), cwd=repo)
    write_parquet(repo / CURATED_PATH, rows, seed=3)
    _run(str(BIN / "dvc"), "add", "-q", CURATED_PATH, cwd=repo)
    _run("git", "add", "-A", cwd=repo)
    _run("git", "commit", "-q", "-m", "curated dataset v1", cwd=repo)
    _run(str(BIN / "dvc"), "push", "-q", cwd=repo)
    return repo, _run("git", "rev-parse", "HEAD", cwd=repo)


@pytest.fixture(scope="module")
def data_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return make_data_repo(tmp_path_factory.mktemp("data"))


@pytest.fixture
def train_env(tmp_path, monkeypatch, mlflow_server, airflow_db):
    """Variables and Connections through the environment (AIRFLOW_VAR_* / AIRFLOW_CONN_*), as a deployment
    might set them; the signing key is a development key pair made for this test."""
    from tollgate.registry.keys import ensure_dev_keypair

    storage = tmp_path / "storage"
    keys = ensure_dev_keypair(tmp_path)
    monkeypatch.setenv("AIRFLOW_VAR_TOLLGATE_STORAGE_ROOT", str(storage))
    monkeypatch.setenv("AIRFLOW_VAR_TOLLGATE_LAUNCH_BACKEND", "local")
    monkeypatch.setenv("AIRFLOW_VAR_TOLLGATE_REGISTERED_MODEL", "tollgate-ctr-launch-tests")
    monkeypatch.setenv("AIRFLOW_VAR_TOLLGATE_TRUSTED_PUBLIC_KEYS", str(keys.public_key))
    monkeypatch.setenv(
        "AIRFLOW_CONN_TOLLGATE_SIGNING",
        json.dumps({"conn_type": "generic", "extra": {"private_key_path": str(keys.private_key)}}),
    )
    monkeypatch.setenv("TOLLGATE_STEP_DELAY_SECONDS", "0.02")  # the trainer's test hook: 20 ms per step
    return storage


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "train_model.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["train_model"]


def _ti(dag_run, task_id: str):
    return next(ti for ti in dag_run.get_task_instances() if ti.task_id == task_id)


def test_sigterm_preemption_retries_resumes_and_reports(data_repo, train_env, mlflow_server):
    from mlflow.tracking import MlflowClient

    repo, rev = data_repo
    conf = {
        **SMALL,
        "rev": rev,
        "data_repo": str(repo),
        "interruption": "sigterm_at_step",
        "interruption_value": 20,
    }
    dag_run = _dag().test(run_conf=conf)

    assert dag_run.state == "success", {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    train = _ti(dag_run, "train_local")
    assert train.state == "success"
    assert train.try_number == 2  # try 1 preempted, try 2 resumed
    assert _ti(dag_run, "train_kubernetes").state == "skipped"

    run_id = training_run_id("train_model", dag_run.run_id)
    checkpoints = train_env / "checkpoints" / run_id
    first, second = ledgers.load(str(checkpoints), run_id).attempts
    assert (first.outcome, first.exit_code, first.interruption) == ("preempted", 75, "SIGTERM at step +20")
    assert (second.outcome, second.exit_code, second.capacity) == ("succeeded", 0, "spot")
    assert first.last_step >= 20
    assert second.resumed_from_step == first.last_step  # checkpoint on SIGTERM: nothing redone

    info = _published(dag_run)
    assert info["training_run_id"] == run_id
    assert info["rev"] == rev and info["data_repo"] == str(repo) and info["data_path"] == CURATED_PATH
    assert len(info["content_hash"]) == 64
    assert info["attempts"] == 2 and info["preemptions"] == 1 and info["steps_redone"] == 0
    assert info["model_uri"] == str(train_env / "models" / run_id)
    assert (Path(info["model_uri"]) / "model.pt").exists()
    assert set(info["metrics"]) >= {"auc", "log_loss", "calibration_error"}

    client = MlflowClient(mlflow_server.url)
    run = client.get_run(info["mlflow_run_id"])
    assert run.data.tags["tollgate.spot.preemptions"] == "1"
    assert run.data.tags["tollgate.preemptions"] == "1"  # the trainer's own count, from TOLLGATE_PREEMPTIONS
    assert run.data.tags["tollgate.airflow.try_number"] == "2"  # the resumed attempt continued the same run
    assert run.data.metrics["spot_preemptions"] == 1.0
    assert run.data.metrics["spot_steps_redone"] == 0.0
    assert "spot_report.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    report = client.download_artifacts(run.info.run_id, "spot_report.json")
    assert [a["outcome"] for a in json.loads(Path(report).read_text())["attempt_log"]] == [
        "preempted",
        "succeeded",
    ]


def _published(dag_run) -> dict:
    """The TRAINED_MODEL asset event this run published (its extra)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from tollgate.assets import TRAINED_MODEL

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == TRAINED_MODEL.name, AssetEvent.source_run_id == dag_run.run_id)
        ).all()
        assert len(events) == 1, f"expected one {TRAINED_MODEL.name} event, got {len(events)}"
        return dict(events[0].extra)


def test_bad_input_fails_fast_without_touching_the_preemption_budget(data_repo, train_env):
    repo, _ = data_repo
    dag_run = _dag().test(run_conf={**SMALL, "rev": "no-such-dataset-version", "data_repo": str(repo)})

    assert dag_run.state == "failed"
    train = _ti(dag_run, "train_local")
    assert train.state == "failed"
    assert train.try_number == 1  # no retry: bad input cannot be fixed by retrying
    assert _ti(dag_run, "publish_trained_model").state == "upstream_failed"
    run_id = training_run_id("train_model", dag_run.run_id)
    (attempt,) = ledgers.load(str(train_env / "checkpoints" / run_id), run_id).attempts
    assert (attempt.outcome, attempt.exit_code) == ("failed", 2)
    assert "bad input" in attempt.reason
