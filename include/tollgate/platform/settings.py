"""Apply ``airflow_settings.yaml`` (the Astro CLI format) to a running Airflow through its REST API.

Idempotent: an existing connection, pool or variable is updated in place, a missing one created.
Values may use ``${NAME}`` for environment variables of the platform (e.g. ``${TOLLGATE_HOME}``).
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from airflow_client.client import ConnectionBody, PoolBody, PoolPatchBody, VariableBody
from airflow_client.client.exceptions import NotFoundException

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


def _exists(get: Callable[[str], Any], key: str) -> bool:
    try:
        get(key)
    except NotFoundException:
        return False
    return True


def apply_settings(stack: LocalStack, path: Path) -> dict[str, str]:
    """Create or update each connection, pool and variable; returns what happened to each."""
    settings = load_settings(path, stack.airflow_env())
    overrides = stack.settings_overrides()  # the profile's own values (e.g. s3:// storage)
    for variable in settings["variables"]:
        variable["variable_value"] = overrides.get(variable["variable_name"], variable["variable_value"])
    client = AirflowClient(stack.airflow_url, "admin", stack.passwords()["admin"])
    done: dict[str, str] = {}
    for conn in settings["connections"]:
        extra = conn.get("conn_extra")
        body = ConnectionBody(
            connection_id=conn["conn_id"],
            conn_type=conn["conn_type"],
            host=conn.get("conn_host"),
            var_schema=conn.get("conn_schema"),
            login=conn.get("conn_login"),
            password=conn.get("conn_password"),
            port=conn.get("conn_port"),
            extra=json.dumps(extra) if isinstance(extra, dict) else extra,
        )
        key = body.connection_id
        if _exists(client.connections.get_connection, key):
            client.connections.patch_connection(key, body)
            done[f"connection {key}"] = "updated"
        else:
            client.connections.post_connection(body)
            done[f"connection {key}"] = "created"
    for pool in settings["pools"]:
        name = pool["pool_name"]
        fields = {
            "slots": int(pool["pool_slot"]),
            "description": pool.get("pool_description", ""),
            "include_deferred": bool(pool.get("include_deferred", False)),
        }
        if _exists(client.pools.get_pool, name):
            client.pools.patch_pool(name, PoolPatchBody(pool=name, **fields))
            done[f"pool {name}"] = "updated"
        else:
            client.pools.post_pool(PoolBody(name=name, **fields))
            done[f"pool {name}"] = "created"
    for variable in settings["variables"]:
        body = VariableBody(
            key=variable["variable_name"],
            value=str(variable["variable_value"]),
            description=variable.get("variable_description"),
        )
        if _exists(client.variables.get_variable, body.key):
            client.variables.patch_variable(body.key, body)
            done[f"variable {body.key}"] = "updated"
        else:
            client.variables.post_variable(body)
            done[f"variable {body.key}"] = "created"
    return done
