"""Settings, partition choice and storage rules of the data stage (no Airflow, no GX)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tollgate import storage
from tollgate.config import default_for
from tollgate.data.pipeline import (
    IngestSettings,
    PartitionNotFound,
    PartitionNotLanded,
    ensure_landed,
    remaining_days,
    resolve_partition,
)
from tollgate.data.suite import BATCH, ROW, GateThresholds, fingerprint, specs

pytestmark = pytest.mark.unit


def settings(**overrides: str) -> IngestSettings:
    values = {**{name: default_for(name) for name in _names()}, **overrides}
    return IngestSettings.from_variables(values.__getitem__)


def _names() -> tuple[str, ...]:
    from tollgate.data.pipeline import SETTING_NAMES

    return SETTING_NAMES


def test_defaults_parse_and_simulate_only_for_a_local_landing_folder():
    local = settings()
    assert local.window_days == 7 and local.simulate_upstream is True
    assert local.thresholds == GateThresholds(1000, 5_000_000, 0.005, 0.12, 0.05)
    assert settings(tollgate_landing_uri="s3://bucket/landing").simulate_upstream is False
    assert settings(tollgate_landing_uri="s3://b/l", tollgate_simulate_upstream="true").simulate_upstream
    assert not settings(tollgate_simulate_upstream="false").simulate_upstream


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("tollgate_label_rate", "0.1", "two numbers 'min,max'"),
        ("tollgate_partition_rows", "10,5", "row bounds 10..5"),
        ("tollgate_quarantine_max_share", "lots", "not a number"),
        ("tollgate_simulate_upstream", "maybe", "use auto, true or false"),
    ],
)
def test_bad_variables_are_explained(name: str, value: str, message: str):
    with pytest.raises(ValueError, match=message):
        settings(**{name: value})


def test_partition_comes_from_param_then_landing_event_then_interval():
    interval = datetime(2024, 3, 9, tzinfo=UTC)
    events = [{"partition": "2024-03-02"}]
    assert resolve_partition(param="2024-03-01", triggering_extras=events, data_interval_start=interval) == (
        "2024-03-01",
        "param",
    )
    assert resolve_partition(param=None, triggering_extras=events, data_interval_start=interval) == (
        "2024-03-02",
        "landing asset event",
    )
    assert resolve_partition(param=None, triggering_extras=[], data_interval_start=interval) == (
        "2024-03-09",
        "data interval",
    )


def test_merged_landing_events_ingest_every_day_once_in_date_order():
    """Events queued while a run was busy reach one run: it takes the earliest day, passes the rest on,
    and the next runs do the same, so every day is ingested once, in date order, none dropped."""
    queued = [{"partition": "2024-03-03"}, {"partition": "2024-03-01"}, {"partition": "2024-03-02"},
              {"partition": "2024-03-01"}]  # fmt: skip
    ingested: list[str] = []
    said: list[str] = []
    while queued:
        day, reason = resolve_partition(
            param=None, triggering_extras=queued, data_interval_start=None, log=said.append
        )
        ingested.append(day)
        rest = remaining_days(queued, day)
        # what announce_remaining posts, plus a day the upstream announced meanwhile
        queued = [{"partitions": rest}] if rest else []
        if day == "2024-03-01":
            queued.append({"partition": "2024-03-04"})
    assert ingested == ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]
    assert reason == "landing asset event"
    assert "ingesting the earliest, 2024-03-01" in said[0] and "2024-03-02, 2024-03-03" in said[0]
    assert remaining_days([], "2024-03-01") == []


def test_landing_event_without_partition_tells_the_upstream_what_to_send():
    with pytest.raises(PartitionNotFound, match=re.escape('"extra": {"partition": "YYYY-MM-DD"}')):
        resolve_partition(param=None, triggering_extras=[{"file": "x"}], data_interval_start=None)
    with pytest.raises(PartitionNotFound, match="Param partition"):
        resolve_partition(param=None, triggering_extras=[], data_interval_start=None)


def test_missing_partition_without_simulation_is_a_retryable_error(tmp_path: Path):
    quiet = settings(tollgate_landing_uri=str(tmp_path), tollgate_simulate_upstream="false")
    with pytest.raises(PartitionNotLanded, match="has not delivered dt=2024-03-01"):
        ensure_landed(quiet, "2024-03-01", log=lambda _: None)
    simulated = settings(tollgate_landing_uri=str(tmp_path), tollgate_simulated_rows="200")
    landed = ensure_landed(simulated, "2024-03-01", log=lambda _: None)
    assert landed["simulated"] and Path(landed["uri"]).is_file()
    assert ensure_landed(quiet, "2024-03-01", log=lambda _: None)["simulated"] is False


def test_put_new_never_overwrites(tmp_path: Path):
    target = str(tmp_path / "a" / "b.bin")
    assert storage.put_new(target, b"one") is True
    assert storage.put_new(target, b"one") is False  # identical: a no-op
    with pytest.raises(storage.StorageError, match="Refusing to overwrite"):
        storage.put_new(target, b"two")
    assert Path(target).read_bytes() == b"one"
    assert storage.put_if_absent(target, b"three") is False
    assert Path(target).read_bytes() == b"one"


def test_storage_paths_keep_the_scheme():
    assert (
        storage.join("s3://bucket/prefix/", "dt=2024-03-01", "x.parquet")
        == "s3://bucket/prefix/dt=2024-03-01/x.parquet"
    )
    assert (
        storage.is_remote("s3://b") and not storage.is_remote("/tmp/x") and not storage.is_remote("file:///x")
    )


def test_suite_levels_and_fingerprint():
    day = datetime(2024, 3, 1).date()
    suite = specs(day, GateThresholds())
    names = {spec.name: spec.level for spec in suite}
    assert names["expect_table_columns_to_match_set"] == BATCH
    assert names["expect_column_mean_to_be_between(clicked)"] == BATCH
    assert names["expect_column_values_to_be_unique(event_id)"] == ROW
    assert names["expect_column_values_to_not_be_null(user_id)"] == ROW
    timestamps = next(s for s in suite if s.name == "expect_column_values_to_be_between(event_ts)")
    assert timestamps.kwargs["min_value"].startswith("2024-03-01T00:00:00")
    assert timestamps.kwargs["max_value"].startswith("2024-03-01T23:59:59")
    assert fingerprint(day, GateThresholds()) == fingerprint(day, GateThresholds())
    assert fingerprint(day, GateThresholds()) != fingerprint(day, GateThresholds(max_bad_share=0.1))
    with pytest.raises(ValueError, match="quarantine share"):
        GateThresholds(max_bad_share=2)
