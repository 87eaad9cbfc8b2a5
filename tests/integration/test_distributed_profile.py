"""The distributed profile (``make up PROFILE=distributed``), run for real: PostgreSQL, Redis, Airflow's
CeleryExecutor with two ``airflow celery worker`` processes, ``moto_server`` as S3 and MLflow with basic
authentication, all on loopback in a temporary state folder on free ports.

One platform start for the whole module (about a minute on two cores), then, in file order:

1. the smoke test: every service healthy, a real DAG run executed by one of the Celery workers, MLflow
   refusing a request without the generated account;
2. one end-to-end pipeline run as a user drives it: a partition landed in the S3 landing bucket, the
   daily ``dataset_ingest`` run (unpaused) validates and versions it (DVC remote on S3), its curated
   Asset event schedules ``train_model`` (trainer, signed registration), the challenger Asset event
   schedules ``evaluate_and_promote`` (signature and offline gates), the approver approves over REST and
   the version becomes ``champion``; checked where a user looks: the alias through MLflow's auth, the
   signed files in the bucket, the runs in PostgreSQL, every task on a Celery worker;
3. ``down`` leaving no process behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.fixtures.platform import TEST_DAG_REFRESH_SECONDS, processes_of
from tollgate.platform.api import AirflowClient
from tollgate.platform.approvals import answer_approval, wait_for_pending_approval
from tollgate.platform.distributed import BUCKET, WORKERS, DistributedStack
from tollgate.platform.processes import free_port, group_alive, port_is_free
from tollgate.platform.stack import AIRFLOW_COMPONENTS, Ports

pytestmark = pytest.mark.integration

INGEST, TRAIN, PROMOTE = "dataset_ingest", "train_model", "evaluate_and_promote"
# Rows of the landed day: enough for the first model to clear the offline gate's absolute floors, few
# enough that validation, versioning and training take seconds.
ROWS = 6000


def _free_ports() -> Ports:
    names = ("airflow", "mlflow", "worker_log", "trigger_log", "smtp", "router", "postgres", "redis", "s3",
             "second_worker_log")  # fmt: skip
    return Ports(**{name: free_port() for name in names})


def _processes_naming(path: Path) -> list[int]:
    """PIDs whose command line names ``path`` (PostgreSQL, started as another user, has its data folder)."""
    marker = str(path).encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def distributed_platform() -> Iterator[tuple[DistributedStack, dict[str, float]]]:
    # PostgreSQL runs as the `postgres` user when the tests run as root: its folders must be reachable by it
    # (pytest's own temporary folders are private to root).
    root = Path(tempfile.mkdtemp(prefix="tollgate-distributed-", dir="/tmp"))
    root.chmod(0o711)
    stack = DistributedStack(
        home=root / "platform", ports=_free_ports(), dag_refresh_seconds=TEST_DAG_REFRESH_SECONDS
    )
    try:
        timings = stack.up(announce=False)
        yield stack, timings
    finally:
        stack.down(quiet=True)  # a no-op when the test stopped it; a failed test leaves nothing running
        if not os.environ.get("TOLLGATE_KEEP_TEST_STATE"):
            shutil.rmtree(root, ignore_errors=True)


def _task_instances(stack: DistributedStack, dag_id: str, run_id: str) -> dict[str, dict]:
    """The task instances of a run as the scheduler recorded them in Airflow's PostgreSQL database."""
    import psycopg

    with psycopg.connect(stack.postgres.url("airflow", driver="postgresql")) as conn:
        rows = conn.execute(
            "SELECT task_id, state, external_executor_id, queue, hostname FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s",
            (dag_id, run_id),
        ).fetchall()
    return {r[0]: {"state": r[1], "celery_id": r[2], "queue": r[3], "hostname": r[4]} for r in rows}


def test_distributed_profile_up_run_on_celery_and_mlflow_auth(distributed_platform):
    stack, timings = distributed_platform
    print("seconds to healthy: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))

    # Every service answers a real request; status shows the profile and each of them.
    assert stack.health() == {"postgresql": True, "redis": True, "s3": True, **dict.fromkeys(WORKERS, True)}
    status = stack.status()
    assert "(profile distributed)" in status
    assert "Airflow UI" in status and "(healthy)" in status and "STOPPED" not in status
    client = AirflowClient(stack.airflow_url, "admin", stack.passwords()["admin"])
    health = client.health()
    assert health["metadatabase"]["status"] == "healthy"
    assert {health[c]["status"] for c in ("scheduler", "dag_processor", "triggerer")} == {"healthy"}
    # Airflow's settings point object storage at the profile's S3 endpoint.
    assert client.variables.get_variable("tollgate_storage_root").value == f"s3://{BUCKET}/storage"
    assert client.variables.get_variable("tollgate_dvc_remote").value == f"s3://{BUCKET}/dvc-remote"

    # A real DAG run, executed by one of the two Celery workers.
    client.wait_for_dag("smoke_check")
    client.unpause("smoke_check")
    run = client.trigger("smoke_check")
    finished = client.wait_for_run("smoke_check", run.dag_run_id, timeout=180)
    assert finished.state == "success"
    tis = _task_instances(stack, "smoke_check", run.dag_run_id)
    assert {t["state"] for t in tis.values()} == {"success"} and set(tis) == {"read_settings", "report"}
    worker_logs = {w: (stack.logs / f"airflow-{w}.log").read_text(errors="replace") for w in WORKERS}
    for task_id, ti in tis.items():
        assert ti["celery_id"], f"{task_id} has no Celery task id: it was not sent through the broker"
        ran_on = [w for w, log in worker_logs.items() if ti["celery_id"] in log]
        assert len(ran_on) == 1, f"{task_id} (celery id {ti['celery_id']}) not in exactly one worker's log"
    log = client.task_log("smoke_check", run.dag_run_id, "report")
    assert f"tollgate_storage_root = s3://{BUCKET}/storage" in log

    # MLflow's basic auth: no account, a wrong password -> 401; the generated admin account -> 200.
    creds_file = stack.mlflow_credentials_file
    assert creds_file.stat().st_mode & 0o077 == 0
    creds = json.loads(creds_file.read_text())
    search = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert requests.get(search, timeout=10).status_code == 401
    assert requests.get(search, auth=(creds["username"], "wrong"), timeout=10).status_code == 401
    allowed = requests.get(search, auth=(creds["username"], creds["password"]), timeout=10)
    assert allowed.status_code == 200, allowed.text
    assert creds["password"] not in stack.status() + stack.describe()
    # Tasks and the router get the account from their environment (never on a command line).
    env = stack.airflow_env()
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (
        creds["username"],
        creds["password"],
    )
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def _first_run(client: AirflowClient, dag_id: str, timeout: float = 300) -> str:
    """The id of the first run of ``dag_id`` (this platform is fresh: a run appears only when scheduled)."""
    deadline = time.monotonic() + timeout
    while not (runs := client.dag_runs.get_dag_runs(dag_id, order_by=["run_after"], limit=5).dag_runs):
        assert time.monotonic() < deadline, f"no {dag_id} run within {timeout:.0f} s"
        time.sleep(1)
    return runs[0].dag_run_id


def _worker_of_each_task(stack: DistributedStack, tis: dict[str, dict], tasks: set[str]) -> dict[str, str]:
    """task id -> the Celery worker whose log holds the task's Celery id (exactly one), for each of ``tasks``.

    (Tasks that run no code, such as an EmptyOperator, are marked done by the scheduler and never reach a
    worker: only tasks that ran code are named here.)"""
    logs = {w: (stack.logs / f"airflow-{w}.log").read_text(errors="replace") for w in WORKERS}
    ran = {}
    for task_id in sorted(tasks):
        ti = tis[task_id]
        assert ti["state"] == "success", f"{task_id} is {ti['state']}"
        assert ti["celery_id"], f"{task_id} has no Celery task id: it was not sent through the broker"
        workers = [w for w, log in logs.items() if ti["celery_id"] in log]
        assert len(workers) == 1, f"{task_id} (celery id {ti['celery_id']}) not in exactly one worker's log"
        ran[task_id] = workers[0]
    return ran


def test_end_to_end_pipeline_from_s3_landing_to_an_approved_champion(distributed_platform, monkeypatch):
    from mlflow import MlflowClient

    from tollgate.data.generator import land
    from tollgate.evaluation.promotion import TAG_DECISION
    from tollgate.registry.names import CHAMPION, PROVENANCE_FILE, SIGNATURE_FILE

    stack, _ = distributed_platform
    for name, value in stack.client_env().items():  # this process: the S3 endpoint and MLflow's account
        monkeypatch.setenv(name, value)
    client = AirflowClient(stack.airflow_url, "admin", stack.passwords()["admin"])
    started = time.monotonic()

    # The upstream system lands yesterday's partition in the S3 landing bucket; unpausing the chain lets
    # the daily schedule ingest it (the run of the latest interval), and the Assets do the rest.
    landing = client.variables.get_variable("tollgate_landing_uri").value
    assert landing == f"s3://{BUCKET}/landing"
    day = datetime.now(UTC).date() - timedelta(days=1)
    landed = land(day, landing, rows=ROWS)
    assert landed.written and landed.uri.startswith(f"s3://{BUCKET}/landing/dt={day}/")
    for dag_id in (TRAIN, PROMOTE, INGEST):  # consumers first: no Asset event is missed
        client.wait_for_dag(dag_id, timeout=300)
        client.unpause(dag_id)

    ingest_run = _first_run(client, INGEST)
    ingested = client.wait_for_run(INGEST, ingest_run, timeout=300)
    assert ingested.state == "success", _task_instances(stack, INGEST, ingest_run)
    curated = client.xcom(INGEST, ingest_run, "publish")
    assert curated["partition"] == str(day) and curated["rows"] == ROWS and curated["quarantined_rows"] == 0
    assert curated["dvc_remote"] == f"s3://{BUCKET}/dvc-remote"

    train_run = _first_run(client, TRAIN)  # scheduled by the curated-dataset Asset event
    trained = client.wait_for_run(TRAIN, train_run, timeout=600)
    assert trained.state == "success", _task_instances(stack, TRAIN, train_run)
    assert client.xcom(TRAIN, train_run, "prepare_job")["dataset"]["rev"] == curated["rev"]
    registered = client.xcom(TRAIN, train_run, "register_challenger")

    promote_run = _first_run(client, PROMOTE)  # scheduled by the challenger Asset event
    detail = wait_for_pending_approval(client, PROMOTE, promote_run, timeout=300)
    assert "Signature: verified" in detail.body
    approver = AirflowClient(stack.airflow_url, "approver", stack.passwords()["approver"])
    answer_approval(approver, PROMOTE, promote_run, "Approve", comment="distributed lane")
    promoted = client.wait_for_run(PROMOTE, promote_run, timeout=300)
    assert promoted.state == "success", _task_instances(stack, PROMOTE, promote_run)
    print(f"landing -> champion in {time.monotonic() - started:.0f} s")

    # The champion alias, read through MLflow's authentication (refused without the account).
    name, version = registered["model_name"], registered["version"]
    alias_url = f"{stack.mlflow_url}/api/2.0/mlflow/registered-models/alias?name={name}&alias={CHAMPION}"
    assert requests.get(alias_url, timeout=10).status_code == 401
    mlflow = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    champion = mlflow.get_model_version_by_alias(name, CHAMPION)
    assert champion.version == version and champion.tags[TAG_DECISION] == "approved"

    # The signed model's files sit in the S3 bucket (MLflow's artifact store), the very bytes the registry's
    # signature and provenance digests name.
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.s3_url)
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="mlflow-artifacts/")
        for obj in page.get("Contents", [])
    ]
    digests = {
        key: hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest()
        for key in keys
        if key.endswith((f"/{SIGNATURE_FILE}", f"/{PROVENANCE_FILE}"))
    }
    assert registered["signature_digest"] in {d for k, d in digests.items() if k.endswith(SIGNATURE_FILE)}
    assert registered["provenance_digest"] in {d for k, d in digests.items() if k.endswith(PROVENANCE_FILE)}
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="dvc-remote/")["KeyCount"] > 0  # the dataset version

    # The runs as Airflow's metadata database in PostgreSQL holds them, and every task that ran did so on a
    # Celery worker (its Celery id in exactly one worker's log).
    import psycopg

    with psycopg.connect(stack.postgres.url("airflow", driver="postgresql")) as conn:
        runs = dict(
            conn.execute(
                "SELECT dag_id, state FROM dag_run WHERE (dag_id, run_id) IN ((%s, %s), (%s, %s), (%s, %s))",
                (INGEST, ingest_run, TRAIN, train_run, PROMOTE, promote_run),
            ).fetchall()
        )
    assert runs == {INGEST: "success", TRAIN: "success", PROMOTE: "success"}
    stages = {
        (INGEST, ingest_run): {"locate_partition", "validate", "version_dataset", "publish"},
        (TRAIN, train_run): {"prepare_job", "train_local", "publish_trained_model", "register_challenger"},
        (PROMOTE, promote_run): {"signature_gate", "offline_gate", "approval", "promote"},
    }
    ran_on: dict[str, str] = {}
    for (dag_id, run_id), tasks in stages.items():
        ran = _worker_of_each_task(stack, _task_instances(stack, dag_id, run_id), tasks)
        ran_on.update({f"{dag_id}.{task}": worker for task, worker in ran.items()})
    print("tasks per Celery worker:", {w: sum(v == w for v in ran_on.values()) for w in WORKERS})
    assert set(ran_on.values()) == set(WORKERS), "one worker ran every task: the other took no work"


def test_down_stops_every_service_and_leaves_no_process(distributed_platform):
    stack, _ = distributed_platform
    state = stack.read_state()
    assert state is not None and state.profile == "distributed"
    stopped = stack.down(quiet=True)
    expected = {"moto-s3", "postgresql", "redis-server", "mlflow-server", "smtp-server", "tollgate-router"}
    expected |= {f"airflow-{c}" for c in (*AIRFLOW_COMPONENTS, *WORKERS)}
    assert set(stopped) == expected
    assert not [s.name for s in state.services if group_alive(s.pgid)]
    assert processes_of(stack.home) == [] and _processes_naming(stack.home) == []
    assert all(port_is_free(port) for port in stack.ports.by_service().values())
    assert stack.read_state() is None
