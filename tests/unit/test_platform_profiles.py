"""The platform profiles as configuration (no service started): which engines each one wires, and that the
distributed profile keeps its passwords off command lines and out of what it prints."""

from __future__ import annotations

import json

import pytest

from tollgate.platform.distributed import WORKERS, DistributedStack, stack_for
from tollgate.platform.processes import ServiceError
from tollgate.platform.stack import AIRFLOW_COMPONENTS, LocalStack, Ports

pytestmark = pytest.mark.unit


def _ports() -> Ports:
    names = ("airflow", "mlflow", "worker_log", "trigger_log", "smtp", "router", "postgres", "redis", "s3",
             "second_worker_log")  # fmt: skip
    return Ports(**{name: number for number, name in enumerate(names, start=1)})


def test_profile_names_pick_the_stack_and_an_unknown_one_is_refused(tmp_path):
    assert type(stack_for("default", home=tmp_path)) is LocalStack
    assert type(stack_for("distributed", home=tmp_path, ports=_ports())) is DistributedStack
    with pytest.raises(ServiceError, match=r"Unknown platform profile 'celery'.*PROFILE=distributed"):
        stack_for("celery", home=tmp_path)


def test_the_default_profile_is_unchanged(tmp_path):
    stack = LocalStack(home=tmp_path, ports=_ports())
    env = stack.airflow_env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    assert stack.airflow_components() == AIRFLOW_COMPONENTS and stack.settings_overrides() == {}
    assert "postgresql" not in LocalStack(home=tmp_path, ports=Ports()).ports.by_service()


def test_distributed_profile_wires_postgres_celery_s3_and_mlflow_auth(tmp_path):
    stack = DistributedStack(home=tmp_path, ports=_ports())
    env = stack.airflow_env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://tollgate:")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@127.0.0.1:7/airflow")
    assert env["AIRFLOW__CELERY__BROKER_URL"].endswith("@127.0.0.1:8/0")
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in env  # SQLite's, not PostgreSQL's
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert stack.airflow_components() == (*AIRFLOW_COMPONENTS, *WORKERS)
    assert stack._component_env(WORKERS[1], env)["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "10"
    assert stack.settings_overrides()["tollgate_dvc_remote"] == "s3://tollgate/dvc-remote"

    creds = json.loads(stack.mlflow_credentials_file.read_text())
    assert stack.mlflow_credentials_file.stat().st_mode & 0o777 == 0o600
    assert stack.mlflow_credentials() == creds  # made once, kept
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (
        creds["username"],
        creds["password"],
    )
    server_env = stack._mlflow_env(env)
    assert server_env["MLFLOW_AUTH_ADMIN_PASSWORD"] == creds["password"]
    assert "MLFLOW_TRACKING_PASSWORD" not in server_env
    command = stack._mlflow_command()
    assert command[command.index("--app-name") + 1] == "basic-auth"
    secrets_on_command_lines = [stack.postgres.password, stack.redis.password, creds["password"]]
    for component in (*WORKERS, "scheduler"):
        command += stack._airflow_command(component)
    assert not [s for s in secrets_on_command_lines if any(s in part for part in command)]
    assert creds["password"] not in stack.describe()
