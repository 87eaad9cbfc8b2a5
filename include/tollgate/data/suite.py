"""The validation suite of a landed partition, kept in code (Great Expectations 1.x).

Every expectation carries ``meta["level"]``:

* ``row``: a row that fails it is quarantined with the expectation's name, the other rows go on;
* ``batch``: a failure rejects the whole partition (schema, types, row count, label rate).

Names used in quarantine reasons and messages are ``<expectation type>(<column>)``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from tollgate.data import schema
from tollgate.data.generator import interval_end, interval_start

if TYPE_CHECKING:
    from tollgate.extensions import Dataset

SUITE_NAME = "ctr_impressions"
ROW = "row"
BATCH = "batch"

# The per-value type GX observes for each schema dtype (nullable ints are observed as int64).
GX_TYPES = {"string": "str", "int64": "int64", "float64": "float64", "datetime64[us, UTC]": "Timestamp"}


@dataclass(frozen=True)
class GateThresholds:
    """Batch-level bounds of the gate (Airflow Variables in the DAG, see config.VARIABLE_DEFAULTS)."""

    min_rows: int = 1_000
    max_rows: int = 5_000_000
    label_rate_min: float = 0.005
    label_rate_max: float = 0.12
    max_bad_share: float = 0.05

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.min_rows <= self.max_rows:
            problems.append(f"row bounds {self.min_rows}..{self.max_rows} (need 0 <= min <= max)")
        if not 0 <= self.label_rate_min <= self.label_rate_max <= 1:
            problems.append(f"label-rate bounds {self.label_rate_min}..{self.label_rate_max} (need 0..1)")
        if not 0 <= self.max_bad_share <= 1:
            problems.append(f"quarantine share {self.max_bad_share} (need 0..1)")
        if problems:
            raise ValueError("Invalid gate thresholds: " + "; ".join(problems) + ". Fix the Variables.")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Spec:
    """One expectation of the suite, as plain data (hashable, JSON-able, no GX import)."""

    cls: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    level: str

    @property
    def type(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.cls).lower()

    @property
    def name(self) -> str:
        column = self.kwargs.get("column")
        return f"{self.type}({column})" if column else self.type


def specs(day: date, thresholds: GateThresholds) -> list[Spec]:
    """The click-through suite for the partition of ``day``."""
    found = [
        Spec(
            "ExpectTableColumnsToMatchSet", {"column_set": list(schema.COLUMNS), "exact_match": True}, BATCH
        ),
        Spec(
            "ExpectTableRowCountToBeBetween",
            {"min_value": thresholds.min_rows, "max_value": thresholds.max_rows},
            BATCH,
        ),
        Spec(
            "ExpectColumnMeanToBeBetween",  # the label rate (share of clicks)
            {
                "column": schema.LABEL,
                "min_value": thresholds.label_rate_min,
                "max_value": thresholds.label_rate_max,
            },
            BATCH,
        ),
    ]
    found += [
        Spec("ExpectColumnValuesToBeOfType", {"column": column, "type_": GX_TYPES[dtype]}, BATCH)
        for column, dtype in schema.COLUMNS.items()
    ]
    found += [Spec("ExpectColumnValuesToNotBeNull", {"column": column}, ROW) for column in schema.COLUMNS]
    found += [
        Spec("ExpectColumnValuesToBeBetween", {"column": column, "min_value": low, "max_value": high}, ROW)
        for column, (low, high) in schema.VALUE_RANGES.items()
    ]
    found += [
        Spec("ExpectColumnValuesToBeInSet", {"column": "device", "value_set": list(schema.DEVICES)}, ROW),
        Spec("ExpectColumnValuesToBeInSet", {"column": "country", "value_set": list(schema.COUNTRIES)}, ROW),
        Spec(
            "ExpectColumnValuesToBeInSet",
            {"column": schema.LABEL, "value_set": list(schema.LABEL_VALUES)},
            ROW,
        ),
        Spec("ExpectColumnValuesToBeUnique", {"column": schema.EVENT_ID}, ROW),
        Spec(  # event time inside the partition's day (UTC)
            "ExpectColumnValuesToBeBetween",
            {
                "column": schema.TIMESTAMP,
                "min_value": interval_start(day).isoformat(),
                "max_value": (interval_end(day) - timedelta(microseconds=1)).isoformat(),
            },
            ROW,
        ),
    ]
    return found


def active_dataset(dataset: Dataset | None = None) -> Dataset:
    """``dataset``, else the active example's (env TOLLGATE_EXAMPLE, read now)."""
    from tollgate import extensions

    return dataset if dataset is not None else extensions.active().dataset


def suite_name(dataset: Dataset | None = None) -> str:
    dataset = active_dataset(dataset)
    return getattr(dataset, "suite_name", None) or dataset.schema.name.replace(" ", "_")


def dataset_specs(day: date, thresholds: GateThresholds, dataset: Dataset | None = None) -> list[Spec]:
    """The suite of ``day`` as the dataset declares it (row- and batch-level expectations)."""
    found = active_dataset(dataset).expectations(day, thresholds)
    bad = [spec for spec in found if not isinstance(spec, Spec) or spec.level not in (ROW, BATCH)]
    if bad:
        raise ValueError(
            f"The dataset's expectations must be tollgate.data.suite.Spec items with level 'row' or 'batch'; "
            f"got {bad[:3]}. Fix the example's Dataset.expectations."
        )
    return found


def build_suite(day: date, thresholds: GateThresholds, dataset: Dataset | None = None) -> Any:
    """The GX ``ExpectationSuite`` for ``day`` (imports GX)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=suite_name(dataset))
    for spec in dataset_specs(day, thresholds, dataset):
        suite.add_expectation(
            getattr(gxe, spec.cls)(**spec.kwargs, meta={"level": spec.level, "name": spec.name})
        )
    return suite


def fingerprint(day: date, thresholds: GateThresholds, dataset: Dataset | None = None) -> str:
    """A short hash of the suite's definition: a changed suite re-validates an unchanged input."""
    payload = json.dumps(
        {
            "suite": [asdict(s) for s in dataset_specs(day, thresholds, dataset)],
            "thresholds": thresholds.as_dict(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:8]
