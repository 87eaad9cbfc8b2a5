"""Driving Airflow the way its users do: the official REST client, ``apache-airflow-client``, logged in.

``AirflowClient`` holds one user's token and hands out the client's API classes (``dags``,
``dag_runs``, ``task_instances``, ``assets``, ...); every call returns the client's models and a
refused call raises its ``ApiException`` (``.status`` is the HTTP status). On top sit only the waits
and small conveniences the client lacks; approvals are in ``approvals.py``.
"""

from __future__ import annotations

import json
import time
from functools import cached_property
from typing import Any

import requests
from airflow_client.client import (
    ApiClient,
    AssetApi,
    BackfillApi,
    Configuration,
    ConnectionApi,
    CreateAssetEventsBody,
    DAGApi,
    DAGPatchBody,
    DagRunApi,
    ImportErrorApi,
    MonitorApi,
    PluginApi,
    PoolApi,
    TaskInstanceApi,
    TriggerDAGRunPostBody,
    VariableApi,
    XComApi,
)
from airflow_client.client.exceptions import ApiException, NotFoundException
from airflow_client.client.models import AssetEventResponse, DAGResponse, DAGRunResponse

AirflowAPIError = ApiException  # what a refused call raises; ``.status`` is the HTTP status
FINISHED = ("success", "failed")


def _configuration(base_url: str, token: str | None = None) -> Configuration:
    from urllib3.util.retry import Retry

    config = Configuration(host=base_url.rstrip("/"), access_token=token)
    config.proxy = None  # loopback or in-cluster: never through a proxy from the environment
    # On the SQLite platform a request can meet a busy database and answer 500 "Database error" (its
    # transaction rolled back). Idempotent calls are sent again, twice at most; a POST never is.
    config.retries = Retry(
        total=2, connect=2, read=0, status=2, status_forcelist=(500,), backoff_factor=1.0,
        allowed_methods=frozenset({"GET", "PATCH", "PUT", "DELETE"}), raise_on_status=False,
    )  # fmt: skip
    return config


def fetch_token(base_url: str, username: str, password: str) -> str:
    """A JWT from ``POST /auth/token`` (the auth manager's endpoint, outside the REST API the client
    covers), sent through the client's own HTTP layer; a wrong password raises 401."""
    config = _configuration(base_url)
    with ApiClient(config) as api_client:
        response = api_client.rest_client.request(
            "POST",
            f"{config.host}/auth/token",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            body={"username": username, "password": password},
            _request_timeout=30,
        )
        body = response.read().decode("utf-8", errors="replace")
        if response.status not in (200, 201):
            ApiException.from_response(http_resp=response, body=body, data=None)
        return json.loads(body)["access_token"]


class AirflowClient:
    """One user's logged-in session of the official client (anonymous without a username)."""

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.token = fetch_token(self.base_url, username, password or "") if username is not None else None
        self.api_client = ApiClient(_configuration(self.base_url, self.token))
        # The official client's API classes, one per REST resource.
        self.dags = DAGApi(self.api_client)
        self.dag_runs = DagRunApi(self.api_client)
        self.task_instances = TaskInstanceApi(self.api_client)
        self.assets = AssetApi(self.api_client)
        self.xcoms = XComApi(self.api_client)
        self.variables = VariableApi(self.api_client)
        self.connections = ConnectionApi(self.api_client)
        self.pools = PoolApi(self.api_client)
        self.backfills = BackfillApi(self.api_client)
        self.plugins = PluginApi(self.api_client)
        self.import_errors = ImportErrorApi(self.api_client)
        self.monitor = MonitorApi(self.api_client)

    @classmethod
    def from_connection(cls, conn: Any) -> AirflowClient:
        """Logged in as the user of an Airflow http Connection (host = api-server URL, login, password)."""
        host = (conn.host if "://" in (conn.host or "") else f"http://{conn.host}").rstrip("/")
        base = f"{host}:{conn.port}" if conn.port else host
        return cls(base, conn.login or "", conn.password or "")

    @cached_property
    def session(self) -> requests.Session:
        """An HTTP session with the same token, for the UI plugin pages (beside the REST API, not in it)."""
        session = requests.Session()
        session.trust_env = False  # loopback: never through a proxy
        if self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        return session

    # ---- thin helpers -------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The health report as plain data; empty while the api-server does not answer."""
        try:
            return self.monitor.get_health(_request_timeout=5).to_dict()
        except Exception:  # not up yet: connection refused, 5xx, half-written answer
            return {}

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> DAGResponse:
        """Wait until the dag-processor has parsed ``dag_id`` into the database."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.dags.get_dag(dag_id)
            except NotFoundException:
                if time.monotonic() > deadline:
                    errors = self.import_errors.get_import_errors().to_dict()
                    raise TimeoutError(
                        f"DAG {dag_id} not parsed after {timeout:.0f} s; import errors: {errors}"
                    ) from None
            time.sleep(1)

    def unpause(self, dag_id: str) -> DAGResponse:
        return self.dags.patch_dag(dag_id, DAGPatchBody(is_paused=False))

    def pause(self, dag_id: str) -> DAGResponse:
        return self.dags.patch_dag(dag_id, DAGPatchBody(is_paused=True))

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None
    ) -> DAGRunResponse:
        """A manual run now (no logical date, as the UI's Trigger button does)."""
        body = TriggerDAGRunPostBody(logical_date=None, conf=conf or {}, dag_run_id=run_id)
        return self.dag_runs.trigger_dag_run(dag_id, body)

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout: float = 300.0, states: tuple[str, ...] = FINISHED
    ) -> DAGRunResponse:
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_runs.get_dag_run(dag_id, run_id)
            if run.state in states:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {dag_id}/{run_id} still {run.state.value} after {timeout:.0f} s")
            time.sleep(0.5)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom value as Python data (the API may hand back the stored JSON as text)."""
        value = self.xcoms.get_xcom_entry(dag_id, task_id, run_id, key).actual_instance.value
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """One try's log as text (structured log lines joined by their ``event``)."""
        log = self.task_instances.get_log(dag_id, run_id, task_id, try_number, accept="application/json")
        lines = log.content.actual_instance or []
        return "\n".join(str(getattr(line, "event", line)) for line in lines)

    def asset_id(self, uri: str) -> int:
        """The id of the asset with exactly this URI (the REST API addresses assets by id)."""
        exact = [a for a in self.assets.get_assets(uri_pattern=uri).assets if a.uri == uri]
        if not exact:
            raise LookupError(f"no asset {uri!r} registered yet (is the DAG that declares it parsed?)")
        return exact[0].id

    def post_asset_event(self, uri: str, extra: dict[str, Any]) -> AssetEventResponse:
        """What an upstream system does to announce new data: an asset event with ``extra``."""
        return self.assets.create_asset_event(CreateAssetEventsBody(asset_id=self.asset_id(uri), extra=extra))
