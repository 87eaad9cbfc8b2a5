"""The serving router as a service of the local platform: its environment, command and health check.

``LocalStack.up`` starts it on 127.0.0.1 (``TOLLGATE_ROUTER_PORT``, default 8000) next to MLflow, waits
for it to be live (ready comes once a verified, approved champion exists), lists it in ``status`` and
stops it with the rest in ``down``. The admin bearer token is generated once into the secrets folder.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from tollgate.platform import secrets
from tollgate.registry.keys import (
    DEV_DECISION_PRIVATE_KEY,
    DEV_DECISION_PUBLIC_KEY,
    DEV_PUBLIC_KEY,
    ensure_dev_keypair,
)
from tollgate.serving.settings import admin_token_path

__all__ = ["SERVICE_NAME", "admin_token_path", "live_url", "ready_url", "router_command", "router_env"]

SERVICE_NAME = "tollgate-router"


def router_env(home: Path, port: int, mlflow_url: str, base: Mapping[str, str]) -> dict[str, str]:
    """The router's environment: the platform's MLflow, trusted keys, storage root and admin token."""
    ensure_dev_keypair(home, DEV_DECISION_PRIVATE_KEY, DEV_DECISION_PUBLIC_KEY)
    token_file = admin_token_path(home)
    secrets.ensure_token(token_file)
    env = dict(base)
    env.setdefault("TOLLGATE_TRUSTED_PUBLIC_KEYS", str(home / "keys" / DEV_PUBLIC_KEY))
    env.setdefault("TOLLGATE_DECISION_PUBLIC_KEYS", str(home / "keys" / DEV_DECISION_PUBLIC_KEY))
    env.setdefault("TOLLGATE_STORAGE_ROOT", str(home / "storage"))
    # The rollout stages wait for the prediction log to hold their requests: a local router flushes it
    # every second (the router's own default is 5 s), so a replayed stage is judged seconds sooner.
    env.setdefault("TOLLGATE_ROUTER_LOG_FLUSH_SECONDS", "1")
    # A new champion is served within 2 s of its promotion (the router's own default looks every 10 s).
    env.setdefault("TOLLGATE_ROUTER_ALIAS_POLL_SECONDS", "2")
    env.update(
        {
            "TOLLGATE_HOME": str(home),
            "MLFLOW_TRACKING_URI": mlflow_url,
            "TOLLGATE_ROUTER_HOST": "127.0.0.1",
            "TOLLGATE_ROUTER_PORT": str(port),
            "TOLLGATE_ROUTER_ADMIN_TOKEN_FILE": str(token_file),
        }
    )
    return env


def router_command() -> list[str]:
    return [sys.executable, "-m", "tollgate.serving"]


def live_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/livez"


def ready_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/readyz"
