"""The dataset_ingest DAG with everything in object storage: landing area, storage root (reports,
quarantine, clean rows) and the DVC remote on S3, served by a real ``moto_server`` endpoint.

The same code path as production S3: fsspec/s3fs for storage, dvc-s3 with ``endpointurl`` for the
remote, the endpoint taken from ``AWS_ENDPOINT_URL`` (set by the ``moto_s3`` fixture).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.test_ingest_dag import (
    ROWS,
    Lane,
    curated_events,
    make_lane,
    run_ingest,
    task_states,
    xcom,
)
from tollgate import storage
from tollgate.data import generator, schema

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_lane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: Path, moto_s3) -> Lane:
    import boto3

    bucket = f"tollgate-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_s3.url).create_bucket(Bucket=bucket)
    return make_lane(tmp_path, monkeypatch, remote_base=f"s3://{bucket}")


def test_clean_day_on_s3_is_versioned_fetchable_and_rerun_safe(s3_lane: Lane, moto_s3):
    generator.land("2024-04-01", s3_lane.landing, rows=ROWS)

    run = run_ingest(partition="2024-04-01")

    assert task_states(run)["publish"] == "success"
    (extra,) = curated_events(s3_lane)
    assert extra["dvc_remote"] == s3_lane.dvc_remote and extra["dvc_remote"].startswith("s3://")
    assert extra["report_uri"].startswith(s3_lane.storage_root + "/reports/dt=2024-04-01/")
    report = json.loads(storage.read_bytes(extra["report_uri"]))
    assert report["gate"]["status"] == "passed"
    assert storage.exists(extra["report_uri"].rsplit("/", 1)[0] + "/data_docs/index.html")
    # The data repository points DVC at the S3 endpoint, so a fresh process can fetch the version.
    dvc_config = (Path(s3_lane.data_repo) / ".dvc" / "config").read_text()
    assert f"url = {s3_lane.dvc_remote}" in dvc_config and f"endpointurl = {moto_s3.url}" in dvc_config
    fetched = s3_lane.root / "fetched.parquet"
    subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "get", extra["data_repo"], schema.CURATED_PATH,
         "--rev", extra["tag"], "-o", str(fetched)],
        check=True, capture_output=True, cwd=s3_lane.root,
    )  # fmt: skip
    assert len(pd.read_parquet(fetched)) == ROWS == extra["rows"]
    assert storage.list_dir(s3_lane.dvc_remote), "nothing was pushed to the S3 remote"

    rerun = run_ingest(partition="2024-04-01")

    assert task_states(rerun)["publish"] == "skipped"
    assert xcom(rerun, "version_dataset")["rev"] == extra["rev"]
    assert len(s3_lane.versions()) == 1 and len(curated_events(s3_lane)) == 1


def test_bad_rows_on_s3_go_to_the_s3_quarantine(s3_lane: Lane):
    landed = generator.land("2024-04-02", s3_lane.landing, rows=ROWS, fault="out_of_range")

    run = run_ingest(partition="2024-04-02")

    assert task_states(run)["publish"] == "success"
    (extra,) = curated_events(s3_lane)
    bad = pd.read_parquet(io.BytesIO(s3_lane.read_quarantine("2024-04-02", "rows.parquet")))
    assert extra["partition_rows"] + len(bad) == landed.rows
    assert extra["quarantined_rows"] == len(bad) > 0


def test_broken_schema_on_s3_quarantines_the_partition(s3_lane: Lane):
    landed = generator.land("2024-04-03", s3_lane.landing, rows=ROWS, fault="schema_type")

    run = run_ingest(partition="2024-04-03")

    assert task_states(run)["validate"] == "failed"
    assert s3_lane.versions() == [] and curated_events(s3_lane) == []
    assert s3_lane.quarantine_files("2024-04-03") == ["partition/impressions.parquet", "reasons.json"]
    kept = s3_lane.read_quarantine("2024-04-03", "partition/impressions.parquet")
    assert kept == storage.read_bytes(landed.uri)
    reasons = json.loads(s3_lane.read_quarantine("2024-04-03", "reasons.json"))
    assert "expect_column_values_to_be_of_type(bid_price)" in reasons["batch_failures"]
