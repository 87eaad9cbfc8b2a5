"""The gate's quarantine, checked against an independent pandas computation, on every fault kind.

The gate takes the quarantined rows and their reasons from Great Expectations' own results. This test
recomputes, in plain pandas and without GX, which landed rows break which rule of the click-through
schema, and which batch-level rule a batch fault breaks, and asserts the gate agrees row by row.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tollgate.data import generator, schema
from tollgate.data.gate import (
    REASONS_COLUMN,
    REJECTED,
    SOURCE_ROW_COLUMN,
    UNREADABLE,
    BatchRejected,
    run_gate,
)

pytestmark = pytest.mark.unit

DAY = "2024-06-01"
ROWS = 2_000


def expected_reasons(frame: pd.DataFrame) -> dict[int, list[str]]:
    """Row position -> names of the row-level rules it breaks (plain pandas, the schema's rules)."""
    reasons: dict[int, list[str]] = {}

    def mark(bad: np.ndarray, name: str) -> None:
        for row in np.flatnonzero(bad):
            reasons.setdefault(int(row), []).append(name)

    for column in schema.COLUMNS:
        mark(frame[column].isna().to_numpy(), f"expect_column_values_to_not_be_null({column})")
    for column, (low, high) in schema.VALUE_RANGES.items():
        values = frame[column]
        mark((values.notna() & ~values.between(low, high)).to_numpy(dtype=bool, na_value=False),
             f"expect_column_values_to_be_between({column})")  # fmt: skip
    allowed = {"device": schema.DEVICES, "country": schema.COUNTRIES, schema.LABEL: schema.LABEL_VALUES}
    for column, values in allowed.items():
        series = frame[column]
        mark((series.notna() & ~series.isin(values)).to_numpy(dtype=bool, na_value=False),
             f"expect_column_values_to_be_in_set({column})")  # fmt: skip
    mark(frame[schema.EVENT_ID].duplicated(keep=False).to_numpy(),
         f"expect_column_values_to_be_unique({schema.EVENT_ID})")  # fmt: skip
    start = pd.Timestamp(f"{DAY}T00:00:00", tz="UTC")
    ts = frame[schema.TIMESTAMP]
    mark((ts.notna() & ~((ts >= start) & (ts < start + pd.Timedelta(days=1)))).to_numpy(dtype=bool),
         f"expect_column_values_to_be_between({schema.TIMESTAMP})")  # fmt: skip
    return {row: sorted(names) for row, names in reasons.items()}


def expected_batch_failures(frame: pd.DataFrame | None) -> set[str]:
    """Names of the batch-level rules the landed partition breaks (None: the file cannot be read)."""
    if frame is None:
        return {UNREADABLE}
    if set(frame.columns) != set(schema.COLUMNS):
        return {"expect_table_columns_to_match_set"}
    failures = set()
    if not 1_000 <= len(frame) <= 5_000_000:
        failures.add("expect_table_row_count_to_be_between")
    if len(frame) and not 0.005 <= frame[schema.LABEL].mean() <= 0.12:
        failures.add(f"expect_column_mean_to_be_between({schema.LABEL})")
    for column, dtype in schema.COLUMNS.items():  # a number or time column that arrived as text
        if dtype != "string" and (frame[column].dtype.kind in "OUS" or str(frame[column].dtype) == "string"):
            failures.add(f"expect_column_values_to_be_of_type({column})")
    return failures


@pytest.mark.parametrize("fault", sorted(generator.FAULTS))
def test_quarantine_matches_an_independent_pandas_computation(fault: str, tmp_path: Path) -> None:
    landed = generator.land(DAY, str(tmp_path / "landing"), fault=fault, rows=ROWS, share=0.01)
    try:
        frame: pd.DataFrame | None = pq.read_table(io.BytesIO(Path(landed.uri).read_bytes())).to_pandas()
    except Exception:
        frame = None
    batch = expected_batch_failures(frame)
    try:
        outcome = run_gate(str(tmp_path / "landing"), str(tmp_path / "storage"), DAY, log=lambda _: None)
    except BatchRejected as rejected:
        outcome = rejected.outcome
        assert outcome.status == REJECTED
        failed = {name.split(" ")[0] for name in outcome.batch_failures}
        assert batch and batch <= failed, (fault, outcome.batch_failures)
        assert Path(outcome.quarantine_uri).read_bytes() == Path(landed.uri).read_bytes()
        return
    assert not batch, f"{fault}: the gate passed a batch that breaks {batch}"
    assert frame is not None
    reasons = expected_reasons(frame)
    assert reasons, f"{fault} should put rows in quarantine"
    quarantined = pd.read_parquet(outcome.quarantine_uri)
    pairs = zip(quarantined[SOURCE_ROW_COLUMN], quarantined[REASONS_COLUMN], strict=True)
    got = {int(row): sorted(names) for row, names in pairs}
    assert got == reasons
    # The quarantined rows are the landed rows themselves; the clean file holds exactly the others.
    landed_bad = frame.iloc[sorted(reasons)].reset_index(drop=True)
    assert quarantined[schema.EVENT_ID].tolist() == landed_bad[schema.EVENT_ID].tolist()
    pd.testing.assert_frame_equal(
        quarantined[list(schema.COLUMNS)], landed_bad[list(schema.COLUMNS)], check_dtype=False
    )
    clean = pd.read_parquet(outcome.clean_uri)
    assert len(clean) == len(frame) - len(reasons) == outcome.clean_rows
    # ... in landed order, with every value and the curated schema's dtypes.
    expected_clean = frame.drop(index=sorted(reasons)).reset_index(drop=True).astype(dict(schema.COLUMNS))
    pd.testing.assert_frame_equal(clean, expected_clean)
    assert not set(clean[schema.EVENT_ID]) & set(landed_bad[schema.EVENT_ID]) or fault == "duplicate_ids"
    # The stored GX record keeps a sample of each failing expectation's rows and says how many there were.
    report = json.loads(Path(outcome.report_uri).read_text())
    for item in report["great_expectations"]["results"]:
        name = item["expectation_config"]["meta"]["name"]
        indices = item["result"].get("unexpected_index_list") or []
        count = item["result"].get("unexpected_index_list_truncated_from", len(indices))
        assert len(indices) <= 20 and count == outcome.row_failures.get(name, 0), name
