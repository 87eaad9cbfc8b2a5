"""The curated window built bucket by bucket has the bytes of the whole window sorted in memory.

The reference is the computation versioning did before it streamed: every day read into pandas,
concatenated in the schema's dtypes, sorted by time then event id (stable), written in one call. The
curated content hash (a version's identity) must not depend on how many rows are held at once.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tollgate.data import generator, schema
from tollgate.data.chunks import RowGroupWriter
from tollgate.data.versioning import curate

pytestmark = pytest.mark.unit


def reference(files: list[Path]) -> bytes:
    frames = [pd.read_parquet(file) for file in files]
    curated = pd.concat(frames, ignore_index=True)[list(schema.COLUMNS)].astype(schema.COLUMNS)
    curated = curated.sort_values([schema.TIMESTAMP, schema.EVENT_ID], kind="stable").reset_index(drop=True)
    return generator.to_parquet_bytes(curated)


def clean_days(tmp_path: Path, rows: int) -> list[Path]:
    """Three clean days in landed (shuffled) order, as the gate writes them, one with several row groups."""
    files = []
    for offset, day in enumerate(("2024-06-01", "2024-06-02", "2024-06-03")):
        frame = generator.generate(day, rows=rows + 37 * offset)
        frame = frame.sample(frac=1.0, random_state=offset).reset_index(drop=True)
        frame.loc[frame.index[:5], schema.TIMESTAMP] = frame[schema.TIMESTAMP].iloc[5]  # equal times
        path = tmp_path / f"dt={day}.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=rows // 3)
        files.append(path)
    return files


@pytest.mark.parametrize("chunk_rows", [None, 0, 700, 150])
def test_curated_window_bytes_do_not_depend_on_the_chunk(tmp_path: Path, chunk_rows: int | None) -> None:
    files = clean_days(tmp_path, 2_000)
    out = tmp_path / "curated.parquet"
    curate(files, out, chunk_rows)
    assert out.read_bytes() == reference(files)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tollgate-buckets-")]


def test_row_group_writer_matches_one_write_table_call(tmp_path: Path) -> None:
    """Pieces of any size give the row groups (and bytes) of one write of the whole table."""
    frame = generator.generate("2024-06-01", rows=5_000)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    whole = io.BytesIO()
    pq.write_table(table, whole, row_group_size=1_000, compression="snappy")
    writer = RowGroupWriter(
        str(tmp_path / "pieces.parquet"), table.schema, row_group_rows=1_000, compression="snappy"
    )
    for start, stop in zip([0, 333, 1_500, 1_501, 4_000], [333, 1_500, 1_501, 4_000, 5_000], strict=True):
        writer.write(table.slice(start, stop - start))
    writer.close()
    assert (tmp_path / "pieces.parquet").read_bytes() == whole.getvalue()
    assert writer.rows == 5_000 and pq.ParquetFile(tmp_path / "pieces.parquet").num_row_groups == 5
    assert np.array_equal(pq.read_table(tmp_path / "pieces.parquet")["user_id"], table["user_id"])
