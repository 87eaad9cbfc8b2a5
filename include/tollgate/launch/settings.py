"""Deployment settings of the training stage, read inside Airflow tasks (Variables, MLflow Connection)."""

from __future__ import annotations

from tollgate.config import MLFLOW_CONN_ID, VARIABLE_DEFAULTS, default_for, mlflow_tracking_uri


def read_settings() -> dict[str, str]:
    """Every Tollgate Variable, falling back to its embedded default."""
    from airflow.sdk import Variable

    return {name: Variable.get(name, default=default_for(name)) for name in VARIABLE_DEFAULTS}


def mlflow_uri() -> str:
    """The tracking server of the ``mlflow_default`` Connection, else ``$MLFLOW_TRACKING_URI``."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(MLFLOW_CONN_ID)
    except AirflowNotFoundException:
        return mlflow_tracking_uri()
    host = (conn.host or "").rstrip("/")
    if not host:
        return mlflow_tracking_uri()
    if "://" in host:
        return f"{host}:{conn.port}" if conn.port else host
    scheme = conn.schema or "http"
    return f"{scheme}://{host}:{conn.port}" if conn.port else f"{scheme}://{host}"
