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

import io
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
from tollgate.data.generator import parse_day, partition_uri
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
_TRIM = 20  # index/value lists kept in the stored JSON report
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


def read_landed(data: bytes) -> pd.DataFrame:
    """Landed Parquet as pandas with nullable ints/strings, so missing values stay visible per row."""
    return landed_frame(read_table(data))


def read_table(data: bytes) -> pa.Table:
    """The landed Parquet file as one Arrow table (raises on a truncated or non-Parquet file)."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))


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
) -> GateOutcome:
    """Validate the landed partition of ``day``; return the outcome or raise ``BatchRejected``."""
    thresholds = thresholds or GateThresholds()
    day = parse_day(day)
    source = partition_uri(landing_uri, day)
    if not storage.exists(source):
        raise FileNotFoundError(
            f"Landing partition {source} does not exist: the upstream system has not delivered "
            f"dt={day.isoformat()} yet. Land it (python -m tollgate.data.land --date {day.isoformat()}) "
            "or enable the simulated upstream (Variable tollgate_simulate_upstream), then rerun."
        )
    data = storage.read_bytes(source)
    digest = storage.sha256(data)
    layout = Layout(storage_root, day.isoformat(), f"{digest[:12]}-{fingerprint(day, thresholds)}")

    if storage.exists(layout.outcome):  # this exact input was already judged by this exact suite
        outcome = GateOutcome.from_dict(json.loads(storage.read_bytes(layout.outcome)))
        outcome.reused = True
        log(f"Reusing the gate's earlier decision on identical input: {layout.outcome}")
    else:
        outcome = _judge(data, source, digest, day, thresholds, layout, log)
        storage.put_new(layout.outcome, json.dumps(outcome.as_dict(), indent=2, default=str).encode())
    for line in outcome.summary_lines():
        log(line)
    if outcome.status == REJECTED:
        raise BatchRejected(outcome)
    return outcome


def _judge(
    data: bytes, source: str, digest: str, day: date, thresholds: GateThresholds, layout: Layout, log: Any
) -> GateOutcome:
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
    t0 = time.perf_counter()
    try:
        table = read_table(data)
        frame = landed_frame(table)
    except Exception as exc:  # truncated, empty or not Parquet at all
        outcome.status = REJECTED
        outcome.batch_failures[UNREADABLE] = f"{type(exc).__name__}: {exc}"
        outcome.docs_uri = ""  # GX cannot run on a file that cannot be read
        _write_report(layout, outcome, gx_result=None)
        _quarantine_partition(layout, outcome, data)
        return outcome
    outcome.landed_rows = len(frame)
    outcome.seconds["read"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    gx_result = _validate(frame, day, thresholds, layout, log)
    outcome.seconds["validate"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    failing_rows = _classify(gx_result, dataset_specs(day, thresholds), outcome)
    label_column = active_dataset().schema.label
    if label_column in frame.columns and outcome.landed_rows:
        label = frame[label_column]
        outcome.label_rate = float(label.mean()) if label.dtype.kind in "iuf" else None
    share = len(failing_rows) / outcome.landed_rows if outcome.landed_rows else 0.0
    if not outcome.batch_failures and share > thresholds.max_bad_share:
        outcome.batch_failures[f"{SHARE_CHECK}({thresholds.max_bad_share})"] = (
            f"{len(failing_rows)} of {outcome.landed_rows} rows ({share:.1%}) fail row-level expectations"
        )
    if outcome.batch_failures:
        outcome.status = REJECTED
        _write_report(layout, outcome, gx_result)
        _quarantine_partition(layout, outcome, data)
        return outcome

    _split(table, frame, failing_rows, layout, outcome)
    outcome.seconds["split"] = time.perf_counter() - t2
    _write_report(layout, outcome, gx_result)
    return outcome


def _validate(frame: pd.DataFrame, day: date, thresholds: GateThresholds, layout: Layout, log: Any) -> Any:
    """Run the GX checkpoint (results COMPLETE, with row indices) and publish its Data Docs."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    with tempfile.TemporaryDirectory(prefix="tollgate-gx-") as docs:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.add_data_docs_site(
            site_name="tollgate",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        batch_definition = (
            context.data_sources.add_pandas("landing")
            .add_dataframe_asset("landing")
            .add_batch_definition_whole_dataframe(f"dt={day.isoformat()}")
        )
        suite = context.suites.add(build_suite(day, thresholds))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"ingest dt={day.isoformat()}", data=batch_definition, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name="tollgate_ingest_gate",
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="data_docs", site_names=["tollgate"])],
                result_format=RESULT_FORMAT,
            )
        )
        with _without_batch_fingerprint():
            result = checkpoint.run(
                batch_parameters={"dataframe": frame},
                run_id=RunIdentifier(run_name=f"dt={day.isoformat()}", run_time=datetime.now(UTC)),
            )
        written = storage.put_tree(docs, layout.docs_dir)
    log(f"GX Data Docs: {written} files written under {layout.docs_dir}")
    return next(iter(result.run_results.values()))


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


def _classify(gx_result: Any, suite_specs: list[Spec], outcome: GateOutcome) -> dict[int, list[str]]:
    """Fill batch/row failures into ``outcome``; return failing row index -> expectation names."""
    level_by_name = {spec.name: spec.level for spec in suite_specs}
    failing: dict[int, list[str]] = {}
    unevaluated: dict[str, str] = {}  # listed after the failures GX could measure
    for item in gx_result.results:
        config = item.expectation_config
        name = (config.meta or {}).get("name") or config.type
        raised = [
            info.get("exception_message")
            for info in (item.exception_info or {}).values()
            if isinstance(info, dict) and info.get("raised_exception")
        ]
        if item.exception_info and item.exception_info.get("raised_exception"):
            raised.append(item.exception_info.get("exception_message"))
        if item.success:
            continue
        level = level_by_name.get(name, BATCH)
        if raised:  # e.g. a missing column or a text column compared with numbers: the schema is broken
            unevaluated[name] = f"could not be evaluated: {raised[0]}"
            continue
        if level == ROW:
            indices = item.result.get("unexpected_index_list") or []
            for index in indices:
                failing.setdefault(int(index), []).append(name)
            outcome.row_failures[name] = len(indices)
        else:
            outcome.batch_failures[name] = _observed(item.result)
    outcome.batch_failures.update(unevaluated)
    return failing


def _observed(result: dict[str, Any]) -> str:
    details = (result.get("details") or {}).get("mismatched")
    if details:
        return json.dumps(details, default=str)
    if result.get("observed_value") is None and result.get("partial_missing_list") is not None:
        return f"missing {result['partial_missing_list']}"  # e.g. a class that never occurs in the batch
    return str(result.get("observed_value"))


def _split(
    table: pa.Table, frame: pd.DataFrame, failing: dict[int, list[str]], layout: Layout, outcome: GateOutcome
) -> None:
    """Write the clean rows and the quarantined rows (each with its failed expectations).

    The clean rows are filtered and written straight from the Arrow table read from the landed file, cast
    to the schema's types with the pandas metadata of a frame in those dtypes: the same bytes as writing
    ``frame[clean].astype(schema)`` through pandas, without converting a million rows back to Arrow.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tollgate.data.generator import to_parquet_bytes

    bad = sorted(failing)
    keep = np.ones(len(frame), dtype=bool)
    keep[bad] = False
    columns = dict(active_dataset().schema.columns)
    target = pa.Schema.from_pandas(
        pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()}), preserve_index=False
    )
    clean = table.filter(pa.array(keep)).select(list(columns)).cast(target)
    outcome.clean_rows = clean.num_rows
    outcome.quarantined_rows = len(bad)
    if outcome.clean_rows + outcome.quarantined_rows != outcome.landed_rows:
        raise AssertionError(
            f"Row accounting broken for dt={outcome.partition}: {outcome.clean_rows} clean + "
            f"{outcome.quarantined_rows} quarantined != {outcome.landed_rows} landed."
        )
    sink = io.BytesIO()
    pq.write_table(clean, sink, compression="snappy")
    del clean
    storage.put_new(layout.clean, sink.getvalue())
    outcome.clean_uri = layout.clean
    if bad:
        rows = frame.iloc[bad].copy()
        rows.insert(0, SOURCE_ROW_COLUMN, pd.array(bad, dtype="int64"))
        rows[REASONS_COLUMN] = [failing[i] for i in bad]
        outcome.status = QUARANTINED_ROWS
        outcome.quarantine_uri = storage.join(layout.quarantine_dir, "rows.parquet")
        storage.put_new(outcome.quarantine_uri, to_parquet_bytes(rows.reset_index(drop=True)))
        _write_reasons(layout, outcome, Counter(name for names in failing.values() for name in names))


def _quarantine_partition(layout: Layout, outcome: GateOutcome, data: bytes) -> None:
    """Keep the whole landed file, unchanged, next to the reasons it was rejected."""
    landing_file = active_dataset().schema.landing_file
    outcome.quarantine_uri = storage.join(layout.quarantine_dir, "partition", landing_file)
    outcome.quarantined_rows = max(outcome.landed_rows, 0)
    outcome.clean_rows = 0
    storage.put_new(outcome.quarantine_uri, data)
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
    """GX results with per-row lists cut to a sample (the full lists live in the quarantine file).

    The lists are cut on the result objects *before* GX converts them to JSON: converting (and deep
    copying) every failing row's value and index only to drop all but a sample cost more than the rest
    of the report. Call after ``_classify`` has read the full index lists.
    """
    for item in gx_result.results:
        result = item.result or {}
        for key in ("unexpected_list", "unexpected_index_list", "partial_unexpected_index_list"):
            values = result.get(key)
            if isinstance(values, list) and len(values) > _TRIM:
                result[key] = values[:_TRIM]
                result[f"{key}_truncated_from"] = len(values)
        result.pop("unexpected_index_query", None)
    return gx_result.to_json_dict()
