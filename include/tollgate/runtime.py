"""Settings as seen from inside an Airflow task: Variables with the embedded defaults of
``tollgate.config``, and the MLflow URI from the ``mlflow_default`` Connection. Call only at run time."""

from __future__ import annotations

import os

from tollgate.config import MLFLOW_CONN_ID, default_for


def setting(name: str) -> str:
    """The Variable ``name``, or its embedded default when it is not set.

    The registered model's default is the active example's (env TOLLGATE_EXAMPLE): each example
    registers its own model unless the Variable names one.
    """
    from airflow.sdk import Variable

    if name == "tollgate_registered_model":
        from tollgate import extensions

        return Variable.get(name, default=extensions.active().registered_model)
    return Variable.get(name, default=default_for(name))


def mlflow_uri() -> str:
    """Tracking/registry URI: the ``mlflow_default`` Connection's host, else $MLFLOW_TRACKING_URI."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(MLFLOW_CONN_ID)
    except Exception:  # missing connection: fall back to the environment
        conn = None
    if conn is not None and conn.host:
        host = conn.host if "://" in conn.host else f"http://{conn.host}"
        return f"{host}:{conn.port}" if conn.port else host
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RuntimeError(
            f"No MLflow server configured: set the {MLFLOW_CONN_ID!r} Connection (http, host = tracking URL) "
            "or MLFLOW_TRACKING_URI."
        )
    return uri
