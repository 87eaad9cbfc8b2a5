"""The validation gate of one landed partition: Great Expectations, row-level quarantine, reports.

``run_gate`` reads ``<landing>/dt=D/impressions.parquet``, validates it with the suite of
``tollgate.data.suite`` and writes, under the storage root, keyed by the input's hash and the suite's
fingerprint (so a rerun on the same input finds its own results and nothing is overwritten)::

    reports/dt=D/<key>/validation.json      GX results (trimmed) + the gate's summary
    reports/dt=D/<key>/data_docs/index.html GX Data Docs
    quarantine/dt=D/<key>/rows.parquet      rows that failed row-level expectations (+ reasons)
    quarantine/dt=D/<key>/partition/...     the whole landed file, when the batch is rejected
    clean/dt=D/<key>/impressions.parquet    the rows that go on to the curated dataset
    reports/dt=D/<key>/outcome.json         written last: the gate's decision

A rejected batch raises ``BatchRejected`` naming the failed expectations and where the data went.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from tollgate import storage
from tollgate.data.chunks import (
    GATE_ROW_GROUP_ROWS,
    RowGroupWriter,
    chunk_size,
    duplicated_values,
    iter_chunks,
    release_memory,
)
from tollgate.data.generator import parse_day, partition_uri
from tollgate.data.gx_merge import (
    MergedValidation,
    check_chunkable,
    in_suite_order,
    rule,
    unique_columns,
)
from tollgate.data.suite import (
    BATCH,
    ROW,
    GateThresholds,
    Spec,
    active_dataset,
    build_suite,
    dataset_specs,
    fingerprint,
    suite_name,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

PASSED = "passed"
QUARANTINED_ROWS = "passed_with_quarantine"
REJECTED = "rejected"
REASONS_COLUMN = "_failed_expectations"
SOURCE_ROW_COLUMN = "_source_row"
UNREADABLE = "readable_parquet_file"
SHARE_CHECK = "quarantined_share_at_most"
# Row indices of every failing row (COMPLETE), but not the pandas "query" GX would build from them: that
# repeats the row filter of each expectation over the whole frame only to print the same indices again.
RESULT_FORMAT: dict[str, Any] = {"result_format": "COMPLETE", "return_unexpected_index_query": False}


class BatchRejected(RuntimeError):
    """The whole partition failed the gate; ``outcome`` says why and where the data went."""

    def __init__(self, outcome: GateOutcome):
        self.outcome = outcome
        super().__init__(outcome.message())


@dataclass
class GateOutcome:
    partition: str
    input_uri: str
    input_sha256: str
    key: str
    status: str
    landed_rows: int
    clean_rows: int
    quarantined_rows: int
    batch_failures: dict[str, str] = field(default_factory=dict)  # name -> observed
    row_failures: dict[str, int] = field(default_factory=dict)  # name -> rows failing it
    label_rate: float | None = None
    clean_uri: str | None = None
    quarantine_uri: str | None = None
    report_uri: str = ""
    docs_uri: str = ""
    thresholds: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    reused: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GateOutcome:
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    def message(self) -> str:
        if self.status != REJECTED:
            return (
                f"Partition {self.partition} passed the gate: {self.clean_rows} clean rows, "
                f"{self.quarantined_rows} quarantined of {self.landed_rows} landed."
            )
        failed = "; ".join(f"{name} (observed: {obs})" for name, obs in self.batch_failures.items())
        return (
            f"Partition {self.partition} REJECTED by the validation gate. Failed expectations: {failed}. "
            f"The whole partition ({self._rows_text()}) was quarantined at {self.quarantine_uri}; "
            f"report {self.report_uri}{self._docs_text()}. No dataset version and no Asset "
            f"event were created. Fix the data upstream, re-land dt={self.partition}, then rerun this "
            "interval (or post a landing asset event)."
        )

    def _docs_text(self) -> str:
        return f", Data Docs {self.docs_uri}" if self.docs_uri else ""

    def _rows_text(self) -> str:
        return "unreadable file" if self.landed_rows < 0 else f"{self.landed_rows} rows"

    def summary_lines(self) -> list[str]:
        """Human-readable summary for the task log."""
        lines = [
            f"Validation gate for dt={self.partition}: {self.status.upper()}",
            f"  input      {self.input_uri} (sha256 {self.input_sha256[:16]}…)",
            f"  rows       landed {self._rows_text()}, clean {self.clean_rows}, "
            f"quarantined {self.quarantined_rows}",
        ]
        if self.label_rate is not None:
            lines.append(f"  label rate {self.label_rate:.4f}")
        for name, observed in self.batch_failures.items():
            lines.append(f"  BATCH FAIL {name}: observed {observed}")
        for name, count in sorted(self.row_failures.items()):
            lines.append(f"  row fail   {name}: {count} rows")
        lines.append(f"  report     {self.report_uri}")
        if self.docs_uri:
            lines.append(f"  data docs  {self.docs_uri}")
        if self.quarantine_uri:
            lines.append(f"  quarantine {self.quarantine_uri}")
        if self.clean_uri:
            lines.append(f"  clean rows {self.clean_uri}")
        return lines


@dataclass(frozen=True)
class Layout:
    """Where the gate writes for one partition and input."""

    root: str
    partition: str
    key: str

    def _at(self, area: str, *parts: str) -> str:
        return storage.join(self.root, area, f"dt={self.partition}", self.key, *parts)

    @property
    def report(self) -> str:
        return self._at("reports", "validation.json")

    @property
    def docs_dir(self) -> str:
        return self._at("reports", "data_docs")

    @property
    def docs_index(self) -> str:
        return self._at("reports", "data_docs", "index.html")

    @property
    def outcome(self) -> str:
        return self._at("reports", "outcome.json")

    @property
    def quarantine_dir(self) -> str:
        return self._at("quarantine")

    @property
    def clean(self) -> str:
        return self._at("clean", active_dataset().schema.landing_file)


def landed_frame(table: pa.Table) -> pd.DataFrame:
    """``table`` as the frame GX validates: nullable ints/strings, gap-free int columns as numpy int64."""
    import pandas as pd
    import pyarrow as pa

    def mapper(arrow_type: pa.DataType) -> Any:
        if pa.types.is_integer(arrow_type):
            return pd.Int64Dtype()
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return pd.StringDtype()
        return None

    frame = table.to_pandas(types_mapper=mapper).reset_index(drop=True)
    # Integer columns without gaps as numpy int64: GX checks those vectorised (Int64 goes value by value).
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.Int64Dtype) and not frame[column].hasnans:
            frame[column] = frame[column].to_numpy(dtype="int64")
    return frame


def run_gate(
    landing_uri: str,
    storage_root: str,
    day: str | date,
    thresholds: GateThresholds | None = None,
    log: Any = print,
    chunk_rows: int | None = None,
) -> GateOutcome:
    """Validate the landed partition of ``day``; return the outcome or raise ``BatchRejected``.

    The partition is read and validated ``chunk_rows`` rows at a time (None: ``chunks.DEFAULT_CHUNK_ROWS``;
    0: the whole partition at once), so memory does not grow with the partition (see ``_judge``)."""
    thresholds = thresholds or GateThresholds()
    day = parse_day(day)
    source = partition_uri(landing_uri, day)
    if not storage.exists(source):
        raise FileNotFoundError(
            f"Landing partition {source} does not exist: the upstream system has not delivered "
            f"dt={day.isoformat()} yet. Land it (python -m tollgate.data.land --date {day.isoformat()}) "
            "or enable the simulated upstream (Variable tollgate_simulate_upstream), then rerun."
        )
    digest = storage.sha256_of(source)
    layout = Layout(storage_root, day.isoformat(), f"{digest[:12]}-{fingerprint(day, thresholds)}")

    if storage.exists(layout.outcome):  # this exact input was already judged by this exact suite
        outcome = GateOutcome.from_dict(json.loads(storage.read_bytes(layout.outcome)))
        outcome.reused = True
        log(f"Reusing the gate's earlier decision on identical input: {layout.outcome}")
    else:
        outcome = _judge(source, digest, day, thresholds, layout, log, chunk_rows)
        storage.put_new(layout.outcome, json.dumps(outcome.as_dict(), indent=2, default=str).encode())
    for line in outcome.summary_lines():
        log(line)
    if outcome.status == REJECTED:
        raise BatchRejected(outcome)
    return outcome


def _judge(
    source: str,
    digest: str,
    day: date,
    thresholds: GateThresholds,
    layout: Layout,
    log: Any,
    chunk_rows: int | None,
) -> GateOutcome:
    """Validate, split and record the partition chunk by chunk.

    Each chunk is validated by GX with the whole suite (row-level failures are partition row numbers);
    its clean rows and quarantined rows are appended to local files in row groups. The chunks' GX results
    are merged into one record for the partition (``gx_merge``), which decides the batch-level verdict;
    only then are the files stored (a rejected batch keeps the landed file instead). Values a uniqueness
    expectation sees in more than one chunk are found first, by a pass over that column alone."""
    import pyarrow.parquet as pq

    outcome = GateOutcome(
        partition=day.isoformat(),
        input_uri=source,
        input_sha256=digest,
        key=layout.key,
        status=PASSED,
        landed_rows=-1,
        clean_rows=0,
        quarantined_rows=0,
        report_uri=layout.report,
        docs_uri=layout.docs_index,
        thresholds=thresholds.as_dict(),
    )
    seconds = Counter[str]()
    suite_specs = dataset_specs(day, thresholds)
    fs, path = storage.filesystem(source)
    with fs.open(path, "rb") as handle, tempfile.TemporaryDirectory(prefix="tollgate-gate-") as work:
        try:
            parquet = pq.ParquetFile(handle)
        except Exception as exc:  # truncated, empty or not Parquet at all
            return _unreadable(layout, outcome, source, exc)
        outcome.landed_rows = parquet.metadata.num_rows
        validation = _Validation(day, thresholds, layout)
        size = chunk_size(chunk_rows, outcome.landed_rows)
        check_chunkable(validation.suite, outcome.landed_rows, size)
        t0 = time.perf_counter()
        repeated = {}
        if outcome.landed_rows > size:
            repeated = {c: duplicated_values(parquet, c, size) for c in unique_columns(validation.suite)}
            release_memory()
        seconds["id_pass"] = time.perf_counter() - t0
        merged = MergedValidation(validation.suite)
        split = _Split(work, outcome)
        label_sum, label_count = 0.0, 0
        label = active_dataset().schema.label
        offset = 0
        chunk_iter = iter_chunks(parquet, size)
        while True:
            t0 = time.perf_counter()
            try:
                table = next(chunk_iter, None)
                if table is None:
                    break
                frame = landed_frame(table)
            except Exception as exc:  # a row group that cannot be decoded
                return _unreadable(layout, outcome, source, exc)
            frame.index = range(offset, offset + len(frame))
            t1 = time.perf_counter()
            seconds["read"] += t1 - t0
            result = validation.run(frame)
            extra = _repeated_elsewhere(validation.suite, result, frame, repeated)
            merged.add(result, frame, extra)
            t2 = time.perf_counter()
            seconds["validate"] += t2 - t1
            failing = _row_failures(validation.suite, result, suite_specs, extra)
            if label in frame.columns and frame[label].dtype.kind in "iuf":
                label_sum += float(frame[label].sum())
                label_count += int(frame[label].count())
            split.add(table, frame, failing, offset)
            offset += len(frame)
            seconds["split"] += time.perf_counter() - t2
            del table, frame, result
            release_memory()
        t0 = time.perf_counter()
        gx_result = validation.record(merged, log)
        seconds["docs"] = time.perf_counter() - t0
        outcome.seconds = {k: round(v, 4) for k, v in seconds.items()}
        if label_count:
            outcome.label_rate = label_sum / label_count
        _classify(gx_result, suite_specs, outcome)
        outcome.row_failures = {k: v for k, v in split.row_counts.items() if v}
        bad = split.quarantined
        share = bad / outcome.landed_rows if outcome.landed_rows else 0.0
        if not outcome.batch_failures and share > thresholds.max_bad_share:
            outcome.batch_failures[f"{SHARE_CHECK}({thresholds.max_bad_share})"] = (
                f"{bad} of {outcome.landed_rows} rows ({share:.1%}) fail row-level expectations"
            )
        if outcome.batch_failures:
            split.discard()
            outcome.status = REJECTED
            _write_report(layout, outcome, gx_result)
            _quarantine_partition(layout, outcome, source)
            return outcome
        t0 = time.perf_counter()
        split.store(layout)
        outcome.seconds["split"] = round(outcome.seconds.get("split", 0) + time.perf_counter() - t0, 4)
    _write_report(layout, outcome, gx_result)
    return outcome


def _unreadable(layout: Layout, outcome: GateOutcome, source: str, exc: Exception) -> GateOutcome:
    outcome.status = REJECTED
    outcome.batch_failures[UNREADABLE] = f"{type(exc).__name__}: {exc}"
    outcome.docs_uri = ""  # GX cannot run on a file that cannot be read
    _write_report(layout, outcome, gx_result=None)
    _quarantine_partition(layout, outcome, source)
    return outcome


def _repeated_elsewhere(
    suite: Any, result: Any, frame: pd.DataFrame, repeated: dict[str, Any]
) -> dict[int, list[int]]:
    """Expectation position -> rows of this chunk whose value a uniqueness expectation sees again in
    another chunk (GX, given one chunk, found the repeats inside it)."""
    extra: dict[int, list[int]] = {}
    for position, (expectation, item) in enumerate(
        zip(suite.expectations, in_suite_order(suite, result), strict=True)
    ):
        values = repeated.get(getattr(expectation, "column", None)) if rule(expectation) == "unique" else None
        if values is None or not len(values) or expectation.column not in frame.columns:
            continue
        seen = set((item.result or {}).get("unexpected_index_list") or [])
        rows = frame.index[
            frame[expectation.column].isin(values.to_pylist()).to_numpy(dtype=bool, na_value=False)
        ]
        found = [int(row) for row in rows if int(row) not in seen]
        if found:
            extra[position] = found
    return extra


class _Validation:
    """One GX context and suite for the partition: ``run`` validates a chunk, ``record`` stores the merged
    result in GX's results store and builds the Data Docs from it, once per partition."""

    def __init__(self, day: date, thresholds: GateThresholds, layout: Layout):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.day, self.layout = day, layout
        self._docs = tempfile.TemporaryDirectory(prefix="tollgate-gx-")
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.context.add_data_docs_site(
            site_name="tollgate",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": self._docs.name,
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        self.batch_definition = (
            self.context.data_sources.add_pandas("landing")
            .add_dataframe_asset("landing")
            .add_batch_definition_whole_dataframe(f"dt={day.isoformat()}")
        )
        self.suite = self.context.suites.add(build_suite(day, thresholds))

    def run(self, frame: pd.DataFrame) -> Any:
        from great_expectations.validator.v1_validator import Validator

        validator = Validator(
            batch_definition=self.batch_definition,
            result_format=RESULT_FORMAT,
            batch_parameters={"dataframe": frame},
        )
        with _without_batch_fingerprint():
            return validator.validate_expectation_suite(self.suite)

    def record(self, merged: MergedValidation, log: Any) -> Any:
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        run_id = RunIdentifier(run_name=f"dt={self.day.isoformat()}", run_time=datetime.now(UTC))
        result = merged.result(
            {
                "run_id": run_id,
                "validation_time": run_id.run_time,
                "batch_parameters": {"dataframe": "chunks"},
            }
        )
        suite_id = ExpectationSuiteIdentifier(name=self.suite.name)
        result_id = ValidationResultIdentifier(
            batch_identifier=f"dt={self.day.isoformat()}",
            expectation_suite_identifier=suite_id,
            run_id=run_id,
        )
        try:
            self.context.validation_results_store.store_validation_results(
                suite_validation_result=result,
                suite_validation_result_identifier=result_id,
                expectation_suite_identifier=suite_id,
            )
            self.context.build_data_docs(site_names=["tollgate"], resource_identifiers=[result_id, suite_id])
            written = storage.put_tree(self._docs.name, self.layout.docs_dir)
        finally:
            self._docs.cleanup()
        log(f"GX Data Docs: {written} files written under {self.layout.docs_dir}")
        return result


@contextmanager
def _without_batch_fingerprint() -> Iterator[None]:
    """GX hashes every value of an in-memory frame below 1 GB as a batch marker (half a second for a
    million rows). The gate already names its input by the landed file's sha256 (the report's key and
    ``input_sha256``), so the frame's hash is work GX need not do: its size threshold is set to 0 for the
    run and restored after."""
    from great_expectations.execution_engine import pandas_execution_engine

    saved = getattr(pandas_execution_engine, "HASH_THRESHOLD", None)
    pandas_execution_engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        if saved is None:
            del pandas_execution_engine.HASH_THRESHOLD
        else:
            pandas_execution_engine.HASH_THRESHOLD = saved


def _classify(gx_result: Any, suite_specs: list[Spec], outcome: GateOutcome) -> None:
    """Fill the batch-level failures (and the expectations GX could not evaluate) into ``outcome``."""
    level_by_name = {spec.name: spec.level for spec in suite_specs}
    unevaluated: dict[str, str] = {}  # listed after the failures GX could measure
    for item in gx_result.results:
        if item.success:
            continue
        name = _name(item)
        raised = _raised_messages(item)
        if raised:  # e.g. a missing column or a text column compared with numbers: the schema is broken
            unevaluated[name] = f"could not be evaluated: {raised[0]}"
        elif level_by_name.get(name, BATCH) != ROW:
            outcome.batch_failures[name] = _observed(item.result)
    outcome.batch_failures.update(unevaluated)


def _row_failures(
    suite: Any, result: Any, suite_specs: list[Spec], extra: dict[int, list[int]]
) -> dict[int, list[str]]:
    """Failing partition row -> the row-level expectations it fails, in GX's order, from one chunk's GX
    result (plus the rows ``extra`` adds to an expectation: values repeated in another chunk)."""
    level_by_name = {spec.name: spec.level for spec in suite_specs}
    position_of = {expectation.id: position for position, expectation in enumerate(suite.expectations)}
    failing: dict[int, list[str]] = {}
    for item in result.results:
        position = position_of[item.expectation_config.id]
        name = _name(item)
        if level_by_name.get(name, BATCH) != ROW or _raised_messages(item):
            continue
        indices = [] if item.success else list((item.result or {}).get("unexpected_index_list") or [])
        for index in [*indices, *extra.get(position, [])]:
            failing.setdefault(int(index), []).append(name)
    return failing


def _name(item: Any) -> str:
    config = item.expectation_config
    return (config.meta or {}).get("name") or config.type


def _raised_messages(item: Any) -> list[str]:
    raised = [
        info.get("exception_message")
        for info in (item.exception_info or {}).values()
        if isinstance(info, dict) and info.get("raised_exception")
    ]
    if item.exception_info and item.exception_info.get("raised_exception"):
        raised.append(item.exception_info.get("exception_message"))
    return raised


def _observed(result: dict[str, Any]) -> str:
    details = (result.get("details") or {}).get("mismatched")
    if details:
        return json.dumps(details, default=str)
    if result.get("observed_value") is None and result.get("partial_missing_list") is not None:
        return f"missing {result['partial_missing_list']}"  # e.g. a class that never occurs in the batch
    return str(result.get("observed_value"))


class _Split:
    """The clean rows and the quarantined rows (each with its failed expectations) of the chunks so far,
    appended to local Parquet files in row groups; ``store`` puts them in storage once the batch passed.

    The clean rows are filtered from the Arrow table read from the landed file, cast to the schema's types
    with the pandas metadata of a frame in those dtypes: the same bytes as writing ``frame[clean]`` in the
    schema's dtypes through pandas, without converting the rows back to Arrow."""

    def __init__(self, work: str, outcome: GateOutcome):
        import pandas as pd
        import pyarrow as pa

        self.outcome = outcome
        self.columns = dict(active_dataset().schema.columns)
        target = pa.Schema.from_pandas(
            pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in self.columns.items()}),
            preserve_index=False,
        )
        self.clean_path = os.path.join(work, "clean.parquet")
        self.rows_path = os.path.join(work, "rows.parquet")
        self.clean = RowGroupWriter(self.clean_path, target, GATE_ROW_GROUP_ROWS, compression="snappy")
        self.rows: RowGroupWriter | None = None
        self.quarantined = 0
        self.row_counts: Counter[str] = Counter()

    def add(self, table: pa.Table, frame: pd.DataFrame, failing: dict[int, list[str]], offset: int) -> None:
        import numpy as np
        import pandas as pd
        import pyarrow as pa

        bad = sorted(failing)
        keep = np.ones(table.num_rows, dtype=bool)
        keep[[row - offset for row in bad]] = False
        if set(self.columns) <= set(table.column_names):
            self.clean.write(table.filter(pa.array(keep)).select(list(self.columns)))
        if not bad:
            return
        rows = frame.loc[bad].copy()
        rows.insert(0, SOURCE_ROW_COLUMN, pd.array(bad, dtype="int64"))
        rows[REASONS_COLUMN] = [failing[i] for i in bad]
        quarantined = pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False)
        if self.rows is None:
            self.rows = RowGroupWriter(
                self.rows_path, quarantined.schema, GATE_ROW_GROUP_ROWS, compression="snappy"
            )
        self.rows.write(quarantined)
        self.quarantined += len(bad)
        self.row_counts.update(name for names in failing.values() for name in names)

    def discard(self) -> None:
        self.clean.close()
        if self.rows is not None:
            self.rows.close()

    def store(self, layout: Layout) -> None:
        outcome = self.outcome
        self.discard()
        outcome.clean_rows = self.clean.rows
        outcome.quarantined_rows = self.quarantined
        if outcome.clean_rows + outcome.quarantined_rows != outcome.landed_rows:
            raise AssertionError(
                f"Row accounting broken for dt={outcome.partition}: {outcome.clean_rows} clean + "
                f"{outcome.quarantined_rows} quarantined != {outcome.landed_rows} landed."
            )
        storage.put_file_new(layout.clean, self.clean_path)
        outcome.clean_uri = layout.clean
        if self.quarantined:
            outcome.status = QUARANTINED_ROWS
            outcome.quarantine_uri = storage.join(layout.quarantine_dir, "rows.parquet")
            storage.put_file_new(outcome.quarantine_uri, self.rows_path)
            _write_reasons(layout, outcome, self.row_counts)


def _quarantine_partition(layout: Layout, outcome: GateOutcome, source: str) -> None:
    """Keep the whole landed file, unchanged, next to the reasons it was rejected."""
    landing_file = active_dataset().schema.landing_file
    outcome.quarantine_uri = storage.join(layout.quarantine_dir, "partition", landing_file)
    outcome.quarantined_rows = max(outcome.landed_rows, 0)
    outcome.clean_rows = 0
    storage.copy_new(source, outcome.quarantine_uri)
    _write_reasons(layout, outcome, Counter())


def _write_reasons(layout: Layout, outcome: GateOutcome, row_counts: Counter) -> None:
    reasons = {
        "partition": outcome.partition,
        "status": outcome.status,
        "source": outcome.input_uri,
        "input_sha256": outcome.input_sha256,
        "landed_rows": outcome.landed_rows,
        "quarantined_rows": outcome.quarantined_rows,
        "batch_failures": outcome.batch_failures,
        "row_failures": dict(row_counts),
        "report": outcome.report_uri,
        "data_docs": outcome.docs_uri,
    }
    storage.put_new(
        storage.join(layout.quarantine_dir, "reasons.json"), json.dumps(reasons, indent=2).encode()
    )


def _write_report(layout: Layout, outcome: GateOutcome, gx_result: Any) -> None:
    report = {
        "suite": suite_name(),
        "gate": outcome.as_dict(),
        "great_expectations": _trimmed(gx_result) if gx_result is not None else None,
    }
    storage.put_if_absent(layout.report, json.dumps(report, indent=2, default=str).encode())


def _trimmed(gx_result: Any) -> dict[str, Any]:
    """GX results as JSON; the merge already cut per-row lists to a sample (the full lists live in the
    quarantine file) and noted each list's length beside it."""
    return gx_result.to_json_dict()
