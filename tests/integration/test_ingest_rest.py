"""An upstream system announces a landed partition through the Airflow REST API, and the local platform
(real api-server, scheduler, dag-processor, executor) runs dataset_ingest for it and publishes the
curated-dataset asset event. The data-quality report is then readable through the UI plugin."""

from __future__ import annotations

import time

import pytest
import requests
from airflow_client.client import CreateAssetEventsBody, DAGPatchBody, VariableBody
from airflow_client.client.models import DAGRunResponse

from tollgate.assets import CURATED_DATASET, LANDING_IMPRESSIONS
from tollgate.data import generator

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

    tis = client.task_instances.get_task_instances(DAG_ID, run.dag_run_id).task_instances
    states = {ti.task_id: ti.state for ti in tis}
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


CRASHED_DAY = "2024-05-11"


def test_a_cleared_run_publishes_a_version_whose_run_died_before_publishing(local_platform, admin_client):
    """A run made the version of a day and died before its asset event (worker lost after version_dataset):
    the version exists, no event names it. The next run of that day finds the version already made and
    still publishes it; clearing that run afterwards publishes nothing more (one event per version). What
    was published is read from Airflow's own asset events."""
    from airflow_client.client import DAGRunClearBody
    from airflow_client.client.exceptions import NotFoundException

    from tollgate.config import default_for
    from tollgate.data.pipeline import IngestSettings, gate, version

    client = admin_client
    client.wait_for_dag(DAG_ID)

    def variable(name: str) -> str:
        try:
            return client.variables.get_variable(name).value
        except NotFoundException:
            return default_for(name)

    settings = IngestSettings.from_variables(variable)
    generator.land(CRASHED_DAY, settings.landing_uri, rows=3000)
    made = version(settings, gate(settings, CRASHED_DAY))  # what the run that died had done
    assert made["created"]
    curated_id = _asset_id(client, CURATED_DATASET.uri)

    def events_for_rev() -> list:
        events = client.assets.get_asset_events(asset_id=curated_id, limit=1000).asset_events
        return [e for e in events if (e.extra or {}).get("rev") == made["rev"]]

    assert events_for_rev() == []
    run = client.trigger(DAG_ID, conf={"partition": CRASHED_DAY, "republish": False})
    client.unpause(DAG_ID)
    try:
        finished = client.wait_for_run(DAG_ID, run.dag_run_id, timeout=600)
        assert finished.state == "success"
        assert client.xcom(DAG_ID, run.dag_run_id, "version_dataset")["created"] is False
        (event,) = events_for_rev()
        assert event.source_run_id == run.dag_run_id and event.extra["tag"] == made["tag"]
        assert "no curated-dataset event names it yet" in client.task_log(DAG_ID, run.dag_run_id, "publish")

        client.dag_runs.clear_dag_run(DAG_ID, run.dag_run_id, DAGRunClearBody(dry_run=False))
        again = client.wait_for_run(DAG_ID, run.dag_run_id, timeout=600)
    finally:
        client.pause(DAG_ID)
    tis = client.task_instances.get_task_instances(DAG_ID, run.dag_run_id).task_instances
    publish = next(ti for ti in tis if ti.task_id == "publish")
    assert again.state == "success" and publish.state == "skipped" and publish.try_number == 2
    assert "was published already" in client.task_log(DAG_ID, run.dag_run_id, "publish", try_number=2)
    assert len(events_for_rev()) == 1
