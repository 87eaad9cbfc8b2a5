"""The distributed profile (``make up PROFILE=distributed``), run for real: PostgreSQL, Redis, Airflow's
CeleryExecutor with two ``airflow celery worker`` processes, ``moto_server`` as S3 and MLflow with basic
authentication, all on loopback in a temporary state folder on free ports.

One platform start for the whole module (about a minute on two cores): up, every service healthy, a real
DAG run executed by one of the Celery workers, MLflow refusing a request without the generated account,
and ``down`` leaving no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures.platform import TEST_DAG_REFRESH_SECONDS, processes_of
from tollgate.platform.api import AirflowClient
from tollgate.platform.distributed import BUCKET, WORKERS, DistributedStack
from tollgate.platform.processes import free_port, group_alive, port_is_free
from tollgate.platform.stack import AIRFLOW_COMPONENTS, Ports

pytestmark = pytest.mark.integration


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


def test_distributed_profile_up_run_on_celery_mlflow_auth_and_down(distributed_platform):
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

    # down stops every service it started, and nothing of the platform keeps running.
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
