"""A client of the router's admin API and of its cheap counters, for the DAG's rollout stages.

Admin calls carry the router's bearer token (``TOLLGATE_ROUTER_ADMIN_TOKEN`` or the token file that
``make up`` writes); counters come from the open ``/metrics`` and ``/status`` (no token): the triggerer
reads only those. Every refusal raises ``RouterAdminError`` with the router's own message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tollgate.serving.settings import ENV_PREFIX, admin_token_path

REQUESTS = "tollgate_router_requests_total"
SHADOW_DONE = "tollgate_router_shadow_predictions_total"
LOG_ROWS = "tollgate_router_prediction_log_rows_total"


class RouterAdminError(RuntimeError):
    """The router refused or could not be reached; the message says which call and why."""


def admin_token() -> str:
    token = os.environ.get(ENV_PREFIX + "ADMIN_TOKEN", "").strip()
    if token:
        return token
    path = Path(os.environ.get(ENV_PREFIX + "ADMIN_TOKEN_FILE") or admin_token_path())
    try:
        return path.read_text().strip()
    except OSError as err:
        raise RouterAdminError(
            f"no router admin token: set {ENV_PREFIX}ADMIN_TOKEN or {ENV_PREFIX}ADMIN_TOKEN_FILE "
            f"(looked in {path}: {err.strerror})"
        ) from None


def counters(metrics_text: str) -> dict[str, float]:
    """The counters a stage waits on, from the Prometheus text of ``/metrics``:
    ``challenger``/``champion`` (answered 200), ``requests`` (all), ``shadow_ok``, ``log_rows``."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {"challenger": 0.0, "champion": 0.0, "requests": 0.0, "shadow_ok": 0.0, "log_rows": 0.0}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == REQUESTS:
                out["requests"] += sample.value
                if sample.labels.get("status") == "200" and sample.labels.get("variant") in out:
                    out[sample.labels["variant"]] += sample.value
            elif sample.name == SHADOW_DONE and sample.labels.get("status") == "ok":
                out["shadow_ok"] += sample.value
            elif sample.name == LOG_ROWS:
                out["log_rows"] += sample.value
    return out


class RouterAdmin:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, admin: bool = True) -> Any:
        import requests

        headers = {"authorization": f"Bearer {self._token or admin_token()}"} if admin else {}
        try:
            answer = requests.request(
                method, self.url + path, json=body, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as err:
            raise RouterAdminError(f"{method} {self.url}{path}: router unreachable: {err}") from None
        if answer.status_code >= 400:
            raise RouterAdminError(f"{method} {self.url}{path} -> {answer.status_code}: {answer.text[:500]}")
        return (
            answer.json()
            if answer.headers.get("content-type", "").startswith("application/json")
            else answer.text
        )

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status", admin=False)

    def counters(self) -> dict[str, float]:
        return counters(self._call("GET", "/metrics", admin=False))

    def set_rollout(
        self,
        mode: str,
        challenger_version: str | None,
        weight: float,
        rollout_id: str,
        lease_s: float,
        owner: str,
    ) -> dict[str, Any]:
        body = {
            "mode": mode,
            "challenger_version": challenger_version,
            "weight_bp": round(weight * 10_000),
            "rollout_id": rollout_id,
            "lease_seconds": lease_s,
            "owner": owner,
        }
        return self._call("POST", "/admin/rollout", body)["rollout"]

    def renew(self, rollout_id: str, lease_s: float) -> dict[str, Any]:
        return self._call(
            "POST", "/admin/rollout/renew", {"rollout_id": rollout_id, "lease_seconds": lease_s}
        )

    def abort(self, reason: str) -> dict[str, Any]:
        return self._call("POST", "/admin/rollout/abort", {"reason": reason})["rollout"]
