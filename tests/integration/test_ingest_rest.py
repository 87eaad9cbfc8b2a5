"""An upstream system announces a landed partition through the Airflow REST API, and the local platform
(real api-server, scheduler, dag-processor, executor) runs dataset_ingest for it and publishes the
curated-dataset asset event. The data-quality report is then readable through the UI plugin."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from airflow_client.client import BackfillPostBody, CreateAssetEventsBody, DAGPatchBody, VariableBody
from airflow_client.client.models import DAGRunResponse

from tollgate.assets import CURATED_DATASET, LANDING_IMPRESSIONS
from tollgate.data import generator
from tollgate.platform.api import AirflowAPIError

pytestmark = pytest.mark.integration

DAG_ID = "dataset_ingest"
DAY = "2024-05-01"


def _asset_id(client, uri: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while True:
        assets = client.assets.get_assets(uri_pattern=uri).assets
        exact = [a for a in assets if a.uri == uri]
        if exact:
            return exact[0].id
        if time.monotonic() > deadline:
            raise TimeoutError(f"asset {uri} not registered after {timeout:.0f} s")
        time.sleep(1)


def _asset_triggered_run(client, timeout: float = 300) -> DAGRunResponse:
    deadline = time.monotonic() + timeout
    while True:
        runs = client.dag_runs.get_dag_runs(DAG_ID, order_by=["-run_after"]).dag_runs
        triggered = [r for r in runs if r.run_type == "asset_triggered"]
        if triggered:
            return triggered[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no asset-triggered run of {DAG_ID} after {timeout:.0f} s; runs: {runs}")
        time.sleep(1)


def test_landing_event_posted_through_rest_starts_an_ingest_that_publishes(local_platform, admin_client):
    client = admin_client
    client.wait_for_dag(DAG_ID)
    landing = client.variables.get_variable("tollgate_landing_uri").value
    # Small simulated days: unpausing also schedules yesterday's daily run, which lands one itself.
    client.variables.patch_variable(
        "tollgate_simulated_rows", VariableBody(key="tollgate_simulated_rows", value="2000")
    )
    generator.land(DAY, landing, rows=3000)  # the upstream system delivers the file ...
    landing_id = _asset_id(client, LANDING_IMPRESSIONS.uri)
    client.unpause(DAG_ID)
    try:
        # ... and announces it.
        client.assets.create_asset_event(CreateAssetEventsBody(asset_id=landing_id, extra={"partition": DAY}))
        run = _asset_triggered_run(client)
        finished = client.wait_for_run(DAG_ID, run.dag_run_id, timeout=600)
    finally:
        client.dags.patch_dag(DAG_ID, DAGPatchBody(is_paused=True))

    states = {ti.task_id: ti.state for ti in _task_instances(client, run.dag_run_id)}
    assert finished.state == "success", states
    assert "from the landing asset event" in client.task_log(DAG_ID, run.dag_run_id, "locate_partition")
    curated_id = _asset_id(client, CURATED_DATASET.uri)
    events = client.assets.get_asset_events(asset_id=curated_id, order_by=["-timestamp"])
    mine = [e for e in events.asset_events if e.source_run_id == run.dag_run_id]
    assert len(mine) == 1
    extra = mine[0].extra
    assert extra["partition"] == DAY and extra["tag"] == f"data-{DAY}"
    assert extra["rows"] >= 3000 and extra["quarantined_rows"] == 0 and extra["rev"]

    # The gate's report is one click away in the UI (plugin view, behind the Airflow login).
    page = client.session.get(f"{local_platform.airflow_url}/tollgate-data/dt/{DAY}", timeout=30)
    assert page.status_code == 200 and "passed" in page.text and "Data Docs" in page.text
    stranger = requests.Session()
    stranger.trust_env = False
    assert stranger.get(f"{local_platform.airflow_url}/tollgate-data/", timeout=30).status_code == 401


def _task_instances(client, run_id: str) -> list:
    return client.task_instances.get_task_instances(DAG_ID, run_id).task_instances


def _backfill(client, body: dict[str, Any], days: list[str], timeout: float = 600) -> list[DAGRunResponse]:
    """Create a backfill, wait until the scheduler completes it, return its runs of ``days``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            backfill = client.backfills.create_backfill(BackfillPostBody(**body))
            break
        except AirflowAPIError as exc:  # SQLite: "Database is locked" while the scheduler writes
            if exc.status != 503 or time.monotonic() > deadline:
                raise
            time.sleep(3)
    while not client.backfills.get_backfill(backfill.id).completed_at:
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfill {backfill.id} not completed after {timeout:.0f} s")
        time.sleep(2)
    runs = client.dag_runs.get_dag_runs(DAG_ID, run_type=["backfill"], limit=100).dag_runs
    return sorted(
        (r for r in runs if r.logical_date and _day(r) in days),
        key=lambda r: r.logical_date,
    )


def _day(run: DAGRunResponse) -> str:
    return run.logical_date.isoformat()[:10]


def test_backfill_gives_one_version_per_day_in_order_and_a_rerun_changes_nothing(
    local_platform, admin_client
):
    import subprocess

    client = admin_client
    client.wait_for_dag(DAG_ID)
    days = ["2024-05-10", "2024-05-11"]  # two days show the order; each run costs ~20-60 s here
    repo = client.variables.get_variable("tollgate_data_repo").value
    client.variables.patch_variable(
        "tollgate_simulated_rows", VariableBody(key="tollgate_simulated_rows", value="2000")
    )
    client.unpause(DAG_ID)
    try:
        body = {"dag_id": DAG_ID, "from_date": f"{days[0]}T00:00:00Z", "to_date": f"{days[-1]}T00:00:00Z",
                "max_active_runs": 1, "reprocess_behavior": "none"}  # fmt: skip
        first = _backfill(client, body, days)
        assert [(_day(r), r.state) for r in first] == [(d, "success") for d in days]

        def tags() -> list[str]:
            out = subprocess.run(
                ["git", "-C", repo, "log", "--reverse", "--format=%D"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            return [
                t.strip() for line in out.splitlines() for t in line.split(",") if "tag: data-2024-05-1" in t
            ]

        assert [t.replace("tag: ", "") for t in tags()] == [f"data-{d}" for d in days]

        # The same backfill again, reprocessing completed runs: nothing new is versioned or published.
        mine = _backfill(client, {**body, "reprocess_behavior": "completed"}, days)
        assert all(r.state == "success" for r in mine), mine
        assert [t.replace("tag: ", "") for t in tags()] == [f"data-{d}" for d in days]
        for run in mine:
            states = {ti.task_id: ti.state for ti in _task_instances(client, run.dag_run_id)}
            assert states["publish"] == "skipped", states
    finally:
        client.dags.patch_dag(DAG_ID, DAGPatchBody(is_paused=True))
