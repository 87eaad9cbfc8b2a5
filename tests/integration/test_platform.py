"""The local platform comes up on free ports, runs a DAG triggered through the REST API with a token,
and goes down leaving no process behind."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import requests

from tests.fixtures.platform import free_ports
from tollgate.platform.api import AirflowAPIError, AirflowClient
from tollgate.platform.processes import ServiceError
from tollgate.platform.stack import LocalStack


def processes_of(home: Path) -> list[int]:
    """PIDs whose environment points at this platform's state folder (every service and task has it)."""
    marker = f"TOLLGATE_HOME={home}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry))
    return found


@pytest.mark.integration
def test_up_trigger_down_leaves_nothing(tmp_path: Path):
    stack = LocalStack(home=tmp_path / "state", ports=free_ports())
    try:
        timings = stack.up(announce=False)
        health = requests.get(f"{stack.airflow_url}/api/v2/monitor/health", timeout=5).json()
        assert health["metadatabase"]["status"] == "healthy"
        assert health["scheduler"]["status"] == "healthy"
        assert requests.get(f"{stack.mlflow_url}/health", timeout=5).ok
        assert timings["settings applied"] > 0

        passwords = stack.passwords()
        assert set(passwords) == {"admin", "approver", "tollgate"}
        assert (tmp_path / "state" / "airflow" / "passwords.json").stat().st_mode & 0o077 == 0

        with pytest.raises(AirflowAPIError) as wrong:
            AirflowClient(stack.airflow_url, "admin", "not-the-password")
        assert wrong.value.status_code == 401

        client = AirflowClient(stack.airflow_url, "admin", passwords["admin"])
        # airflow_settings.yaml was applied: pool, MLflow connection, Variables pointing into the state dir.
        assert client.get("/pools/spot_training")["slots"] == 2
        assert client.get("/connections/mlflow_default")["host"] == stack.mlflow_url
        assert client.get("/variables/tollgate_launch_backend")["value"] == "local"
        assert client.get("/variables/tollgate_storage_root")["value"] == str(tmp_path / "state" / "storage")

        client.wait_for_dag("smoke_check")
        client.unpause("smoke_check")
        run = client.trigger("smoke_check")
        finished = client.wait_for_run("smoke_check", run["dag_run_id"], timeout=180)
        assert finished["state"] == "success"
        log = client.task_log("smoke_check", run["dag_run_id"], "report")
        assert f"tollgate_storage_root = {tmp_path / 'state' / 'storage'}" in log

        assert processes_of(stack.home), "expected the platform's processes to be found while it runs"
        assert "running" in stack.status()
    finally:
        stopped = stack.down(quiet=True)
    assert set(stopped) == {
        "smtp-server",
        "mlflow-server",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    }
    assert processes_of(stack.home) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.airflow_url}/api/v2/monitor/health", timeout=2)


@pytest.mark.unit
def test_taken_port_is_named_with_the_fix(tmp_path: Path):
    ports = free_ports()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports.mlflow))
        blocker.listen()
        stack = LocalStack(home=tmp_path / "state", ports=ports)
        with pytest.raises(ServiceError) as error:
            stack.up(announce=False)
    message = str(error.value)
    assert f"mlflow server port {ports.mlflow}" in message
    assert "TOLLGATE_MLFLOW_PORT" in message
    assert processes_of(tmp_path / "state") == []


@pytest.mark.unit
def test_down_without_platform_stops_nothing(tmp_path: Path, capsys):
    assert LocalStack(home=tmp_path / "empty", ports=free_ports()).down() == []
    assert "Nothing to stop" in capsys.readouterr().out
