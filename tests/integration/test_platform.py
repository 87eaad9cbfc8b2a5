"""The local platform comes up on free ports and runs a DAG triggered through the REST API with a token.

The session platform (tests/fixtures/platform.py) is the one under test: it came up through the same
``LocalStack.up`` as ``make up``, and its teardown checks that ``down`` leaves no process behind.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import requests

from tests.fixtures.platform import free_ports, processes_of
from tollgate.platform.api import AirflowAPIError, AirflowClient
from tollgate.platform.processes import ServiceError
from tollgate.platform.stack import LocalStack


@pytest.mark.integration
def test_platform_is_healthy_applies_settings_and_runs_a_dag(local_platform, admin_client):
    stack = local_platform
    health = requests.get(f"{stack.airflow_url}/api/v2/monitor/health", timeout=5).json()
    assert health["metadatabase"]["status"] == "healthy"
    assert health["scheduler"]["status"] == "healthy"
    assert requests.get(f"{stack.mlflow_url}/health", timeout=5).ok

    passwords = stack.passwords()
    assert set(passwords) == {"admin", "approver", "tollgate-auditor", "tollgate"}
    assert (stack.home / "airflow" / "passwords.json").stat().st_mode & 0o077 == 0

    with pytest.raises(AirflowAPIError) as wrong:
        AirflowClient(stack.airflow_url, "admin", "not-the-password")
    assert wrong.value.status == 401

    client = admin_client
    # airflow_settings.yaml was applied: pool, MLflow connection, Variables pointing into the state dir.
    assert client.pools.get_pool("spot_training").slots == 2
    assert client.connections.get_connection("mlflow_default").host == stack.mlflow_url
    assert client.variables.get_variable("tollgate_launch_backend").value == "local"
    assert client.variables.get_variable("tollgate_storage_root").value == str(stack.home / "storage")

    client.wait_for_dag("smoke_check")
    client.unpause("smoke_check")
    try:
        run = client.trigger("smoke_check")
        finished = client.wait_for_run("smoke_check", run.dag_run_id, timeout=180)
    finally:
        client.pause("smoke_check")
    assert finished.state == "success"
    log = client.task_log("smoke_check", run.dag_run_id, "report")
    assert f"tollgate_storage_root = {stack.home / 'storage'}" in log

    assert processes_of(stack.home), "expected the platform's processes to be found while it runs"
    status = stack.status()
    assert "not running" not in status and "STOPPED" not in status, status
    assert re.search(r"airflow-scheduler\s+running", status) and "(healthy)" in status, status


@pytest.mark.integration
def test_the_platform_router_serves_the_approved_champion(local_platform):
    """`make up` serves the champion through the router: on its own port, in `status`, admin token in the
    secrets folder, a champion signed with the platform's key and approved with its decision key."""
    from tests.fixtures.serving import ServingModels, example_rows
    from tollgate.config import default_for
    from tollgate.serving.settings import admin_token_path

    stack = local_platform
    url = f"http://127.0.0.1:{stack.ports.router}"
    assert requests.get(f"{url}/livez", timeout=10).status_code == 200
    assert "Router" in stack.status() and (stack.home / "logs" / "tollgate-router.log").is_file()
    token_file = admin_token_path(stack.home)
    assert token_file.stat().st_mode & 0o077 == 0
    admin = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    assert requests.post(f"{url}/admin/reload", timeout=10).status_code == 401

    name = requests.get(f"{url}/status", timeout=10).json()["model_name"]
    assert name == default_for("tollgate_registered_model")
    models = ServingModels(stack.mlflow_url, stack.home)  # the platform's signing and decision keys
    if requests.get(f"{url}/readyz", timeout=10).status_code == 503:
        assert "champion" in requests.get(f"{url}/readyz", timeout=10).json()["reason"]
    version = models.register(name)
    models.set_alias(name, "champion", version)
    reload = requests.post(f"{url}/admin/reload", headers=admin, timeout=120)
    assert reload.status_code == 200 and reload.json()["variants"]["champion"]["version"] == version
    assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
    answer = requests.post(f"{url}/predict", json={"rows": example_rows(2)}, timeout=30)
    assert answer.status_code == 200 and answer.json()["model_version"] == version
    assert "ready" in stack.status()


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
