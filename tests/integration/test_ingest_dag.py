"""The dataset_ingest DAG end to end with ``dag.test()``: real GX, real DVC with a local remote, real git.

Each test gets its own landing area, storage root, data repository and DVC remote (Airflow Variables set
through ``AIRFLOW_VAR_*``), lands partitions with the generator (optionally with a fault) and checks what
an operator would: the dataset versions (tags, manifests, data fetched back with ``dvc get``), the asset
events in the metadata database, the quarantine files and reports.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tollgate import storage
from tollgate.data import generator, schema
from tollgate.data.gate import REASONS_COLUMN, SOURCE_ROW_COLUMN
from tollgate.data.versioning import DataRepo

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

ROWS = 3000


# ---- helpers shared with the S3 and REST tests of the data stage ---------------------------------------
@dataclass
class Lane:
    """One isolated set-up of the data stage: where things land, go and get versioned."""

    root: Path
    landing: str
    storage_root: str
    data_repo: str
    dvc_remote: str

    def versions(self) -> list[dict[str, Any]]:
        return DataRepo(self.data_repo, self.dvc_remote).versions()

    def quarantine_files(self, day: str) -> list[str]:
        """Files under quarantine/dt=<day>/<key>/, as paths relative to the key folder."""
        base = storage.join(self.storage_root, "quarantine", f"dt={day}")
        fs, path = storage.filesystem(base)
        return sorted(p[len(path) :].lstrip("/").split("/", 1)[1] for p in fs.find(path))

    def read_quarantine(self, day: str, name: str) -> bytes:
        base = storage.join(self.storage_root, "quarantine", f"dt={day}")
        (key,) = storage.list_dir(base)
        return storage.read_bytes(storage.join(base, key, *name.split("/")))

    def curated(self, rev: str) -> pd.DataFrame:
        import dvc.api

        with dvc.api.open(schema.CURATED_PATH, repo=self.data_repo, rev=rev, mode="rb") as handle:
            return pd.read_parquet(io.BytesIO(handle.read()))


def make_lane(root: Path, monkeypatch: pytest.MonkeyPatch, remote_base: str | None = None) -> Lane:
    """Point the DAG's Variables at a fresh lane; object storage under ``remote_base`` (s3://...) if given."""
    base = remote_base or str(root)
    lane = Lane(
        root=root,
        landing=storage.join(base, "landing"),
        storage_root=storage.join(base, "storage"),
        data_repo=str(root / "data-repo"),
        dvc_remote=storage.join(base, "dvc-remote"),
    )
    variables = {
        "tollgate_landing_uri": lane.landing,
        "tollgate_storage_root": lane.storage_root,
        "tollgate_data_repo": lane.data_repo,
        "tollgate_dvc_remote": lane.dvc_remote,
        "tollgate_simulated_rows": str(ROWS),
        "tollgate_simulate_upstream": "true",
    }
    for name, value in variables.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_{name.upper()}", value)
    return lane


def ingest_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "dataset_ingest.py"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.get_dag("dataset_ingest")


def run_ingest(partition: str | None = None, logical_date: datetime | None = None, **conf: Any) -> Any:
    """One ``dag.test()`` run; returns the DagRun."""
    run_conf = {"partition": partition, "republish": False, **conf}
    return ingest_dag().test(logical_date=logical_date, run_conf=run_conf)


def task_states(run: Any) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        return {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in tis}


def curated_events(lane: Lane) -> list[dict[str, Any]]:
    """Extras of the curated-dataset asset events published for this lane's data repository, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from tollgate.assets import CURATED_DATASET

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == CURATED_DATASET.uri)
            .order_by(AssetEvent.id)
            .all()
        )
        extras = [dict(event.extra or {}) for event in events]
    repo = str(Path(lane.data_repo).resolve())
    return [extra for extra in extras if extra.get("data_repo") == repo]


def xcom(run: Any, task_id: str) -> Any:
    """The return value a task of ``run`` pushed."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key="return_value")
            .one()
        )
        return XComModel.deserialize_value(row)


# ---- tests ---------------------------------------------------------------------------------------------


@pytest.fixture
def lane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: Path) -> Lane:
    return make_lane(tmp_path, monkeypatch)


def test_clean_day_becomes_a_version_and_an_asset_event(lane: Lane):
    generator.land("2024-03-01", lane.landing, rows=ROWS)

    run = run_ingest(partition="2024-03-01")

    assert task_states(run) == {
        "locate_partition": "success",
        "announce_remaining": "skipped",  # no other day was announced to this run
        "validate": "success",
        "version_dataset": "success",
        "publish": "success",
    }
    (version,) = lane.versions()
    assert version["tag"] == "data-2024-03-01"
    events = curated_events(lane)
    assert len(events) == 1
    extra = events[0]
    assert extra["rev"] == version["rev"]
    assert extra["tag"] == "data-2024-03-01"
    assert extra["partition"] == "2024-03-01"
    assert (extra["window_start"], extra["window_end"]) == ("2024-03-01", "2024-03-01")
    assert extra["rows"] == ROWS and extra["quarantined_rows"] == 0
    assert extra["data_repo"] == str(Path(lane.data_repo).resolve())
    assert extra["data_path"] == schema.CURATED_PATH
    assert len(extra["content_hash"]) == 64

    # Anyone can fetch the version later by rev, in a fresh process, from the DVC remote.
    fetched = lane.root / "fetched.parquet"
    subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "get", extra["data_repo"], extra["data_path"],
         "--rev", extra["rev"], "-o", str(fetched)],
        check=True, capture_output=True, cwd=lane.root,
    )  # fmt: skip
    curated = pd.read_parquet(fetched)
    assert len(curated) == ROWS
    assert list(curated.columns) == list(schema.COLUMNS)
    assert curated[schema.EVENT_ID].is_unique

    # The gate's evidence is stored for the partition: JSON results and GX Data Docs.
    report = json.loads(Path(extra["report_uri"]).read_text())
    assert report["gate"]["status"] == "passed"
    assert report["great_expectations"]["success"] is True
    assert (Path(extra["report_uri"]).parent / "data_docs" / "index.html").is_file()


def test_rerun_of_an_interval_returns_the_same_rev_and_publishes_nothing(lane: Lane):
    generator.land("2024-03-01", lane.landing, rows=ROWS)
    run_ingest(partition="2024-03-01")
    first = lane.versions()

    rerun = run_ingest(partition="2024-03-01")

    assert task_states(rerun)["version_dataset"] == "success"
    assert task_states(rerun)["publish"] == "skipped"
    assert lane.versions() == first
    assert len(curated_events(lane)) == 1
    assert xcom(rerun, "version_dataset")["rev"] == first[0]["rev"]


def test_three_days_give_three_versions_in_date_order(lane: Lane):
    days = ["2024-03-01", "2024-03-02", "2024-03-03"]
    for day in days:
        generator.land(day, lane.landing, rows=ROWS)
    # Driven by the data interval, as the daily schedule and backfills do: logical date = the day after.
    for day in days:
        run = run_ingest(logical_date=datetime.fromisoformat(day).replace(tzinfo=UTC) + pd.Timedelta(days=1))
        assert task_states(run)["publish"] == "success"

    versions = lane.versions()
    assert [v["tag"] for v in versions] == [f"data-{d}" for d in days]
    assert [v["rows"] for v in versions] == [ROWS, 2 * ROWS, 3 * ROWS]  # window of 7 days
    log = subprocess.run(
        ["git", "-C", lane.data_repo, "log", "--format=%D", "--reverse"], capture_output=True, text=True
    ).stdout
    assert [line for line in log.splitlines() if "tag:" in line][-3:] == [
        "tag: data-2024-03-01",
        "tag: data-2024-03-02",
        "HEAD -> main, tag: data-2024-03-03",
    ]
    assert [e["partition"] for e in curated_events(lane)] == days


@pytest.mark.parametrize("fault", generator.ROW_LEVEL_FAULTS)
def test_row_level_faults_quarantine_the_bad_rows_and_version_the_rest(lane: Lane, fault: str):
    landed = generator.land("2024-03-04", lane.landing, rows=ROWS, fault=fault)

    run = run_ingest(partition="2024-03-04")

    assert task_states(run)["publish"] == "success"
    (extra,) = curated_events(lane)
    assert lane.quarantine_files("2024-03-04") == ["reasons.json", "rows.parquet"]
    bad = pd.read_parquet(io.BytesIO(lane.read_quarantine("2024-03-04", "rows.parquet")))
    # Every landed row is accounted for: in the curated version or in the quarantine, never both.
    assert extra["partition_rows"] + len(bad) == landed.rows
    assert extra["quarantined_rows"] == len(bad) > 0
    assert extra["rows"] == extra["partition_rows"]
    assert all(len(reasons) > 0 for reasons in bad[REASONS_COLUMN])
    expected_reason = {
        "null_burst": "expect_column_values_to_not_be_null(user_id)",
        "out_of_range": "expect_column_values_to_be_between(",
        "duplicate_ids": "expect_column_values_to_be_unique(event_id)",
    }[fault]
    assert any(expected_reason in reason for reasons in bad[REASONS_COLUMN] for reason in reasons)
    assert bad[SOURCE_ROW_COLUMN].is_unique
    curated = lane.curated(extra["rev"])
    assert len(curated) == extra["rows"]
    if fault != "duplicate_ids":  # replayed ids: every copy is quarantined, the id cannot be trusted
        assert set(curated[schema.EVENT_ID]).isdisjoint(set(bad[schema.EVENT_ID]))


BATCH_FAULTS = [
    ("schema_drop", "expect_table_columns_to_match_set"),
    ("schema_rename", "expect_table_columns_to_match_set"),
    ("schema_type", "expect_column_values_to_be_of_type(bid_price)"),
    ("label_shift", "expect_column_mean_to_be_between(clicked)"),
    ("empty", "expect_table_row_count_to_be_between"),
    ("truncated", "readable_parquet_file"),
]


@pytest.mark.parametrize(("fault", "named"), BATCH_FAULTS)
def test_batch_level_faults_reject_the_whole_partition(
    lane: Lane, fault: str, named: str, caplog: pytest.LogCaptureFixture
):
    landed = generator.land("2024-03-05", lane.landing, rows=ROWS, fault=fault)

    with caplog.at_level("INFO"):
        run = run_ingest(partition="2024-03-05")

    states = task_states(run)
    assert states["validate"] == "failed"
    assert states["version_dataset"] == "upstream_failed"
    assert states["publish"] == "upstream_failed"
    assert lane.versions() == []
    assert curated_events(lane) == []
    assert lane.quarantine_files("2024-03-05") == ["partition/impressions.parquet", "reasons.json"]
    # The whole landed file is kept, byte for byte, next to the reasons.
    assert lane.read_quarantine("2024-03-05", "partition/impressions.parquet") == storage.read_bytes(
        landed.uri
    )
    reasons = json.loads(lane.read_quarantine("2024-03-05", "reasons.json"))
    assert named in reasons["batch_failures"]
    assert reasons["quarantined_rows"] == max(landed.rows, 0)
    # The failure names the expectations and where the data went.
    assert "REJECTED" in caplog.text and named in caplog.text
    assert "partition/impressions.parquet" in caplog.text


def test_too_many_bad_rows_reject_the_partition(lane: Lane, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW_VAR_TOLLGATE_QUARANTINE_MAX_SHARE", "0.01")
    generator.land("2024-03-06", lane.landing, rows=ROWS, fault="null_burst")  # 2 % bad rows

    run = run_ingest(partition="2024-03-06")

    assert task_states(run)["validate"] == "failed"
    assert lane.versions() == []
    reasons = json.loads(lane.read_quarantine("2024-03-06", "reasons.json"))
    assert list(reasons["batch_failures"]) == ["quarantined_share_at_most(0.01)"]
    assert reasons["quarantined_rows"] == ROWS


def test_simulated_upstream_lands_a_missing_day(lane: Lane):
    run = run_ingest(partition="2024-03-07")

    assert task_states(run)["publish"] == "success"
    assert storage.exists(generator.partition_uri(lane.landing, "2024-03-07"))
    assert [v["tag"] for v in lane.versions()] == ["data-2024-03-07"]
