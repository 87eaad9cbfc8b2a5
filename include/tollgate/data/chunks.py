"""Parquet in bounded memory: a partition read in chunks of rows, written in row groups, and the values
of a column that occur more than once across the whole file.

The gate validates a partition chunk by chunk and versioning builds the curated window bucket by bucket;
both write their output through ``RowGroupWriter``, which emits row groups of exactly
``ROW_GROUP_ROWS`` rows (pyarrow's own default), so a file written in pieces has the row groups of one
``pyarrow.parquet.write_table`` call over the whole table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

# The gate's and versioning's chunk (rows in memory at once); Variable tollgate_gate_chunk_rows.
DEFAULT_CHUNK_ROWS = 500_000
# Rows per row group of the files written here: pyarrow's default for write_table.
ROW_GROUP_ROWS = 1024 * 1024
# Rows per row group of the gate's clean and quarantine files. A writer holds up to one row group of rows
# until it is full, and copies it once to write it: with 1Mi rows that held about 250 MB across chunks and
# doubled it at each write (the gate's peak grew from 1M to 4M rows). These files are read back in chunks
# and carry no version hash (the curated window does, and keeps ROW_GROUP_ROWS).
GATE_ROW_GROUP_ROWS = 128 * 1024


def chunk_size(chunk_rows: int | None, total_rows: int) -> int:
    """Rows per chunk: ``chunk_rows`` (None: the default; 0 or less: the whole partition at once)."""
    if chunk_rows is None:
        chunk_rows = DEFAULT_CHUNK_ROWS
    return chunk_rows if chunk_rows > 0 else max(total_rows, 1)


def iter_chunks(
    parquet: pq.ParquetFile, chunk_rows: int, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """The file's rows in order, as tables of ``chunk_rows`` rows (the last may be shorter).

    Row groups are read one at a time; a chunk may span row groups. An empty file yields one empty
    table, so a check still sees the file's columns and its zero rows."""
    import pyarrow as pa

    schema = (
        parquet.schema_arrow
        if columns is None
        else pa.schema([parquet.schema_arrow.field(c) for c in columns])
    )
    pending: list[pa.RecordBatch] = []
    count = 0
    emitted = False
    for batch in parquet.iter_batches(batch_size=min(chunk_rows, ROW_GROUP_ROWS), columns=columns):
        pending.append(batch)
        count += batch.num_rows
        while count >= chunk_rows:
            table = pa.Table.from_batches(pending, schema=schema)
            yield table.slice(0, chunk_rows)
            emitted = True
            rest = table.slice(chunk_rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count or not emitted:
        yield pa.Table.from_batches(pending, schema=schema)


class RowGroupWriter:
    """A Parquet file written from tables of any size, in row groups of exactly ``row_group_rows``."""

    def __init__(self, path: str, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS, **options: Any):
        import pyarrow.parquet as pq

        self.schema = schema
        self.rows = 0
        self._row_group_rows = row_group_rows
        self._pending: list[pa.Table] = []
        self._count = 0
        self._writer = pq.ParquetWriter(path, schema, **options)

    def write(self, table: pa.Table) -> None:
        import pyarrow as pa

        if not table.num_rows:
            return
        self._pending.append(table.cast(self.schema) if not table.schema.equals(self.schema) else table)
        self._count += table.num_rows
        while self._count >= self._row_group_rows:
            buffered = pa.concat_tables(self._pending)
            self._emit(buffered.slice(0, self._row_group_rows))
            rest = buffered.slice(self._row_group_rows)
            self._pending, self._count = ([rest] if rest.num_rows else []), rest.num_rows

    def _emit(self, table: pa.Table) -> None:
        # One contiguous table per row group: the pages come out as from one write of the whole table.
        self._writer.write_table(table.combine_chunks(), row_group_size=self._row_group_rows)
        self.rows += table.num_rows

    def close(self) -> None:
        import pyarrow as pa

        if self._count:
            self._emit(pa.concat_tables(self._pending))
        self._pending, self._count = [], 0
        self._writer.close()


def release_memory() -> None:
    """Hand memory freed by the last chunk back to the system (Arrow's pool, glibc's heap), so the next
    chunk reuses it rather than the process's resident size creeping up chunk by chunk."""
    import contextlib
    import ctypes
    import sys

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def duplicated_values(parquet: pq.ParquetFile, column: str, batch_rows: int) -> pa.Array:
    """The non-null values of ``column`` that occur more than once in the file.

    Two passes over that column only: every value hashed to 64 bits (8 bytes a row are held: this pass,
    unlike the chunks, grows with the partition), then the values whose hash repeats are compared
    exactly, so a hash collision never marks a unique value."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    def hashed(values: pa.Array) -> np.ndarray:
        # categorize=False: ids are mostly distinct, factorizing them first would only cost time
        return pd.util.hash_array(values.to_numpy(zero_copy_only=False), categorize=False)

    def column_batches() -> Iterator[pa.Array]:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=[column]):
            yield batch.column(0).drop_null()

    hashes = np.concatenate([hashed(values) for values in column_batches()] or [np.empty(0, np.uint64)])
    hashes.sort()
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    del hashes
    field_type = parquet.schema_arrow.field(column).type
    if not len(repeated):
        return pa.array([], type=field_type)
    candidates = [values.filter(pa.array(np.isin(hashed(values), repeated))) for values in column_batches()]
    counts = pc.value_counts(pa.chunked_array(candidates, type=field_type))
    return counts.field("values").filter(pc.greater(counts.field("counts"), 1))
