"""Apply ``airflow_settings.yaml`` (the Astro CLI format) to a running Airflow through its REST API.

Idempotent: an existing connection, pool or variable is updated in place, a missing one created.
Values may use ``${NAME}`` for environment variables of the platform (e.g. ``${TOLLGATE_HOME}``).
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tollgate.platform.api import AirflowClient

if TYPE_CHECKING:
    from tollgate.platform.stack import LocalStack


def load_settings(path: Path, env: dict[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
    raw = yaml.safe_load(path.read_text()) or {}
    airflow = raw.get("airflow") or {}
    mapping = env if env is not None else dict(os.environ)

    def expand(value: Any) -> Any:
        if isinstance(value, str):
            try:
                return string.Template(value).substitute(mapping)
            except KeyError as missing:
                raise ValueError(
                    f"{path}: value {value!r} names the environment variable {missing}, which is not set"
                ) from None
        if isinstance(value, dict):
            return {k: expand(v) for k, v in value.items()}
        return value

    return {
        section: [expand(item) for item in airflow.get(section) or []]
        for section in ("connections", "pools", "variables")
    }


def _upsert(client: AirflowClient, collection: str, key: str, body: dict[str, Any]) -> str:
    existing = client.session.get(f"{client.base_url}/api/v2/{collection}/{key}", timeout=30)
    if existing.status_code == 404:
        client.post(f"/{collection}", body)
        return "created"
    client.patch(f"/{collection}/{key}", body)
    return "updated"


def apply_settings(stack: LocalStack, path: Path) -> dict[str, str]:
    settings = load_settings(path, stack.airflow_env())
    client = AirflowClient(stack.airflow_url, "admin", stack.passwords()["admin"])
    done: dict[str, str] = {}
    for conn in settings["connections"]:
        body = {
            "connection_id": conn["conn_id"],
            "conn_type": conn["conn_type"],
            "host": conn.get("conn_host"),
            "schema": conn.get("conn_schema"),
            "login": conn.get("conn_login"),
            "password": conn.get("conn_password"),
            "port": conn.get("conn_port"),
            "extra": conn.get("conn_extra") if isinstance(conn.get("conn_extra"), str | None) else None,
        }
        if isinstance(conn.get("conn_extra"), dict):
            import json

            body["extra"] = json.dumps(conn["conn_extra"])
        done[f"connection {conn['conn_id']}"] = _upsert(client, "connections", conn["conn_id"], body)
    for pool in settings["pools"]:
        body = {
            "name": pool["pool_name"],
            "slots": int(pool["pool_slot"]),
            "description": pool.get("pool_description", ""),
            "include_deferred": bool(pool.get("include_deferred", False)),
        }
        done[f"pool {pool['pool_name']}"] = _upsert(client, "pools", pool["pool_name"], body)
    for variable in settings["variables"]:
        body = {
            "key": variable["variable_name"],
            "value": str(variable["variable_value"]),
            "description": variable.get("variable_description"),
        }
        done[f"variable {variable['variable_name']}"] = _upsert(
            client, "variables", variable["variable_name"], body
        )
    return done
