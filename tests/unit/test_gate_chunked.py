"""The gate on a partition spread over several row groups, validated in chunks smaller than the partition.

Every fault kind is landed in row groups of 500 rows and gated in chunks of 700 rows (so chunks straddle
row groups, and the replayed ids of ``duplicate_ids`` repeat values from other chunks): the quarantined
rows, their reasons and the batch verdict must match the independent pandas computation of the oracle
test, and the stored files must be those of the same gate run on the whole partition at once. Batch-level
expectations must be judged on the whole partition, not chunk by chunk.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.unit.test_gate_quarantine_oracle import DAY, ROWS, expected_batch_failures, expected_reasons
from tollgate import storage
from tollgate.data import generator, schema
from tollgate.data.gate import REASONS_COLUMN, SOURCE_ROW_COLUMN, BatchRejected, GateOutcome, run_gate
from tollgate.data.gx_merge import NotChunkable
from tollgate.data.suite import GateThresholds

pytestmark = pytest.mark.unit

ROW_GROUP = 500
CHUNK = 700


def land_in_row_groups(landing: Path, data: bytes, fault: str | None) -> Path:
    """The landed file written with row groups of ``ROW_GROUP`` rows (a truncated file as it is)."""
    uri = Path(generator.partition_uri(str(landing), DAY))
    uri.parent.mkdir(parents=True, exist_ok=True)
    if fault == "truncated":
        uri.write_bytes(data)
        return uri
    table = pq.read_table(io.BytesIO(data))
    pq.write_table(table, uri, row_group_size=ROW_GROUP, compression="snappy")
    assert pq.ParquetFile(uri).num_row_groups == max(1, -(-table.num_rows // ROW_GROUP))
    return uri


def gate(landing: Path, root: Path, chunk_rows: int, thresholds: GateThresholds | None = None) -> GateOutcome:
    try:
        return run_gate(str(landing), str(root), DAY, thresholds, log=lambda _: None, chunk_rows=chunk_rows)
    except BatchRejected as rejected:
        return rejected.outcome


@pytest.mark.parametrize("fault", sorted(generator.FAULTS))
def test_chunked_gate_matches_the_oracle_and_the_whole_partition_gate(fault: str, tmp_path: Path) -> None:
    data = generator.partition_bytes(DAY, fault=fault, rows=ROWS, share=0.01)
    landed = land_in_row_groups(tmp_path / "landing", data, fault)
    try:
        frame: pd.DataFrame | None = pq.read_table(landed).to_pandas()
    except Exception:
        frame = None
    chunked = gate(tmp_path / "landing", tmp_path / "chunked", CHUNK)
    whole = gate(tmp_path / "landing", tmp_path / "whole", 0)

    batch = expected_batch_failures(frame)
    assert set(chunked.batch_failures) == set(whole.batch_failures)
    assert chunked.status == whole.status and chunked.landed_rows == whole.landed_rows
    if batch:
        assert batch <= {name.split(" ")[0] for name in chunked.batch_failures}, chunked.batch_failures
        assert Path(chunked.quarantine_uri).read_bytes() == landed.read_bytes()
        assert chunked.clean_uri is None
        return
    assert frame is not None and not chunked.batch_failures
    report = json.loads(Path(chunked.report_uri).read_text())
    if len(frame) > CHUNK:
        assert report["great_expectations"]["statistics"]["chunks"] == -(-len(frame) // CHUNK)
    quarantined = pd.read_parquet(chunked.quarantine_uri)
    got = {
        int(r): sorted(n)
        for r, n in zip(quarantined[SOURCE_ROW_COLUMN], quarantined[REASONS_COLUMN], strict=True)
    }
    assert got == expected_reasons(frame)
    if fault == "duplicate_ids":  # the replayed rows sit in the last chunk, their originals in earlier ones
        duplicated = [row for row, names in got.items() if any("unique" in name for name in names)]
        assert min(duplicated) < CHUNK and max(duplicated) >= len(frame) - CHUNK
    # The same files as the whole partition validated at once: clean bytes, quarantined rows and reasons.
    assert Path(chunked.clean_uri).read_bytes() == Path(whole.clean_uri).read_bytes()
    pd.testing.assert_frame_equal(quarantined, pd.read_parquet(whole.quarantine_uri))
    assert chunked.row_failures == whole.row_failures
    assert (chunked.clean_rows, chunked.quarantined_rows) == (whole.clean_rows, whole.quarantined_rows)
    assert chunked.label_rate == pytest.approx(whole.label_rate)
    # The one stored record of the partition counts every failing row (a sample of their indices kept).
    for item in report["great_expectations"]["results"]:
        name = item["expectation_config"]["meta"]["name"]
        indices = item["result"].get("unexpected_index_list") or []
        count = item["result"].get("unexpected_index_list_truncated_from", len(indices))
        assert len(indices) <= 20 and count == chunked.row_failures.get(name, 0), name
    assert Path(chunked.docs_uri).is_file()


def test_batch_expectations_judge_the_whole_partition_not_each_chunk(tmp_path: Path) -> None:
    """All clicks in the last chunk: each earlier chunk alone has a click rate of 0 (below the bound), the
    partition's is normal; and a row-count bound between a chunk and the partition rejects the partition."""
    frame = generator.generate(DAY, rows=ROWS)
    frame = pd.concat([frame[frame[schema.LABEL] == 0], frame[frame[schema.LABEL] == 1]], ignore_index=True)
    landing = tmp_path / "landing"
    land_in_row_groups(landing, generator.to_parquet_bytes(frame), None)

    passed = gate(landing, tmp_path / "a", CHUNK)
    assert passed.status == "passed" and not passed.batch_failures
    assert passed.label_rate == pytest.approx(frame[schema.LABEL].mean())

    too_many = gate(landing, tmp_path / "b", CHUNK, GateThresholds(min_rows=100, max_rows=ROWS - 1))
    assert set(too_many.batch_failures) == {"expect_table_row_count_to_be_between"}
    assert too_many.batch_failures["expect_table_row_count_to_be_between"] == str(ROWS)

    low = GateThresholds(label_rate_min=0.5, label_rate_max=0.9)
    rejected = gate(landing, tmp_path / "c", CHUNK, low)
    mean = f"expect_column_mean_to_be_between({schema.LABEL})"
    assert set(rejected.batch_failures) == {mean}
    assert float(rejected.batch_failures[mean]) == pytest.approx(frame[schema.LABEL].mean())


def test_a_suite_that_cannot_be_merged_across_chunks_is_refused_clearly(tmp_path: Path, monkeypatch) -> None:
    """A median cannot be built from chunk medians: more than one chunk gives a clear error, one chunk
    (the Variable at 0) validates as before."""
    from tollgate.data import suite
    from tollgate.data.suite import BATCH, Spec

    real = suite.dataset_specs

    def with_median(day, thresholds, dataset=None):
        extra = Spec(
            "ExpectColumnMedianToBeBetween", {"column": "bid_price", "min_value": 0, "max_value": 50}, BATCH
        )
        return [*real(day, thresholds, dataset), extra]

    monkeypatch.setattr(suite, "dataset_specs", with_median)
    monkeypatch.setattr("tollgate.data.gate.dataset_specs", with_median)
    landing = tmp_path / "landing"
    land_in_row_groups(landing, generator.partition_bytes(DAY, rows=ROWS), None)
    with pytest.raises(
        NotChunkable, match=r"expect_column_median_to_be_between\(bid_price\).*tollgate_gate_chunk_rows"
    ):
        run_gate(str(landing), str(tmp_path / "s"), DAY, log=lambda _: None, chunk_rows=CHUNK)
    outcome = run_gate(str(landing), str(tmp_path / "s"), DAY, log=lambda _: None, chunk_rows=0)
    assert outcome.status == "passed"


def test_duplicated_values_pass_finds_repeats_across_row_groups(tmp_path: Path) -> None:
    from tollgate.data.chunks import duplicated_values

    ids = [f"id-{i}" for i in range(1000)] + ["id-3", "id-998", None, None]
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"event_id": ids}), path, row_group_size=100)
    found = duplicated_values(pq.ParquetFile(path), "event_id", 64)
    assert sorted(found.to_pylist()) == ["id-3", "id-998"]
    numbers = np.arange(5000) % 4999  # 0 repeats
    pq.write_table(pa.table({"n": numbers}), tmp_path / "n.parquet", row_group_size=1000)
    assert duplicated_values(pq.ParquetFile(tmp_path / "n.parquet"), "n", 700).to_pylist() == [0]
    assert storage.exists(str(path))
