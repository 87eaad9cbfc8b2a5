"""One Great Expectations result for a partition validated chunk by chunk.

GX validates each chunk with the whole suite; ``MergedValidation`` folds the chunks' results into one
``ExpectationSuiteValidationResult`` for the partition (the record: stored, rendered as Data Docs). How
each kind of expectation combines:

* **row-wise (map) expectations** (not null, between, in set, regex, ...): a row's verdict does not
  depend on other rows, so the partition's failing rows are the union of the chunks' (GX reports them as
  partition row numbers: each chunk's frame is indexed by its rows' positions in the file). Counts add
  up; index and value lists keep a sample of ``SAMPLE`` (their full length is noted beside them).
  ``mostly`` below 1 would judge each chunk by its own share: refused when there is more than one chunk.
* **uniqueness of a column** (``expect_column_values_to_be_unique``): GX finds the duplicates inside a
  chunk; a value repeated in another chunk is found by a pass over that column alone
  (``chunks.duplicated_values``) and its rows are added to the expectation's failing rows.
* **aggregate expectations whose metric combines** (``COMBINED``): GX's own ``_validate`` judges the
  metric combined across chunks: row count = sum; mean = mean of the chunk means weighted by each
  chunk's non-null count; min = smallest chunk minimum; max = largest chunk maximum; values a
  ``distinct_values_to_contain_set`` misses = those missing from every chunk.
* **expectations on what every chunk shares** (``EVERY_CHUNK``: the column set and order, column types,
  which the file's schema fixes): the partition passes when every chunk passes; the record shows the
  first failing chunk's result.
* **anything else** (cross-row map expectations such as increasing values or compound uniqueness,
  aggregate kinds with no rule here such as a median or a quantile): ``NotChunkable`` is raised before
  any chunk is read, naming the expectation and the way out (validate the partition in one chunk).

With a single chunk the merge changes nothing: the result is GX's own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SAMPLE = 20  # index/value lists kept in the record (the quarantine file holds every failing row)
UNIQUE = "expect_column_values_to_be_unique"
COMBINED = {
    "expect_table_row_count_to_be_between": "table.row_count",
    "expect_column_mean_to_be_between": "column.mean",
    "expect_column_min_to_be_between": "column.min",
    "expect_column_max_to_be_between": "column.max",
    "expect_column_distinct_values_to_contain_set": "column.distinct_values.missing_from_column",
}
EVERY_CHUNK = frozenset(
    {
        "expect_table_columns_to_match_set",
        "expect_table_columns_to_match_ordered_list",
        "expect_table_column_count_to_equal",
        "expect_table_column_count_to_be_between",
        "expect_column_to_exist",
        "expect_column_values_to_be_of_type",
        "expect_column_values_to_be_in_type_list",
    }
)
CROSS_ROW = frozenset(
    {
        "expect_column_values_to_be_increasing",
        "expect_column_values_to_be_decreasing",
        "expect_compound_columns_to_be_unique",
        "expect_multicolumn_values_to_be_unique",
    }
)
_MAP_LISTS = (
    "unexpected_index_list",
    "unexpected_list",
    "partial_unexpected_list",
    "partial_unexpected_index_list",
)
_COUNTS = ("element_count", "missing_count", "unexpected_count")


class NotChunkable(ValueError):
    """The suite has an expectation whose verdict over the partition cannot be built from chunks."""


def rule(expectation: Any) -> str:
    """How the expectation combines across chunks: 'map', 'unique', 'combined', 'every_chunk' or ''."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    kind = expectation.expectation_type
    if kind in EVERY_CHUNK:
        return "every_chunk"
    if kind in COMBINED:
        return "combined"
    if kind == UNIQUE:
        return "unique"
    if kind in CROSS_ROW:
        return ""
    if isinstance(expectation, ColumnMapExpectation | ColumnPairMapExpectation | MulticolumnMapExpectation):
        return "map"
    return ""


def check_chunkable(suite: Any, rows: int, chunk_rows: int) -> None:
    """Raise ``NotChunkable`` when ``rows`` need more than one chunk and the suite cannot be merged."""
    if rows <= chunk_rows:
        return
    problems = []
    for expectation in suite.expectations:
        how = rule(expectation)
        mostly = getattr(expectation, "mostly", None)
        name = (expectation.meta or {}).get("name") or expectation.expectation_type
        if not how:
            problems.append(f"{name} (no rule combines {expectation.expectation_type} across chunks)")
        elif how in ("map", "unique") and mostly is not None and mostly < 1:
            problems.append(f"{name} (mostly={mostly} would judge each chunk by its own share)")
    if problems:
        raise NotChunkable(
            f"The partition has {rows} rows, more than one chunk of {chunk_rows}, and the suite has "
            f"expectations whose verdict over the whole partition cannot be built from chunks: "
            f"{'; '.join(problems)}. Either validate partitions in one chunk (set the Variable "
            f"tollgate_gate_chunk_rows to 0, or to at least {rows}; the gate's memory then grows with the "
            "partition), or use kinds that combine (see tollgate.data.gx_merge)."
        )


def in_suite_order(suite: Any, suite_result: Any) -> list[Any]:
    """The result's items in the order of the suite's expectations (GX may order them otherwise)."""
    by_id = {item.expectation_config.id: item for item in suite_result.results}
    return [by_id[expectation.id] for expectation in suite.expectations]


def unique_columns(suite: Any) -> list[str]:
    """Columns whose values the suite expects to be unique (each needs a pass over the whole file)."""
    return [e.column for e in suite.expectations if rule(e) == "unique"]


@dataclass
class _State:
    """What one expectation has gathered from the chunks so far."""

    item: Any = None  # the result that stands for the partition (first failing / first raised / first)
    success: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    lists: dict[str, list[Any]] = field(default_factory=dict)
    partial_counts: Counter = field(default_factory=Counter)
    values: dict[str, Any] = field(default_factory=dict)  # combined metric parts
    raised: bool = False


class MergedValidation:
    """Folds each chunk's ``ExpectationSuiteValidationResult`` into the partition's result."""

    def __init__(self, suite: Any):
        self.suite = suite
        self.chunks = 0
        self._only: Any = None  # the first chunk's result, the record when it is the only chunk
        self._states = [_State() for _ in suite.expectations]

    def add(self, chunk_result: Any, frame: pd.DataFrame, extra_unexpected: dict[int, list[int]]) -> None:
        """One chunk's result; ``extra_unexpected``: expectation position -> partition rows to add to its
        failing rows (the values a uniqueness expectation finds repeated in another chunk)."""
        self.chunks += 1
        self._only = chunk_result if self.chunks == 1 and not extra_unexpected else None
        for position, (state, item) in enumerate(
            zip(self._states, in_suite_order(self.suite, chunk_result), strict=True)
        ):
            if state.raised:
                continue
            if _raised(item):
                state.item, state.success, state.raised = item, False, True
                continue
            how = rule(self.suite.expectations[position])
            if how in ("map", "unique"):
                self._add_map(state, item, extra_unexpected.get(position, []))
            elif how == "combined":
                self._add_combined(state, item, frame)
            else:
                if state.item is None or (state.success and not item.success):
                    state.item = item
                state.success = state.success and bool(item.success)

    @staticmethod
    def _add_map(state: _State, item: Any, extra: list[int]) -> None:
        result = item.result or {}
        if state.item is None:
            state.item = item
        for key in _COUNTS:
            state.counts[key] = state.counts.get(key, 0) + int(result.get(key) or 0)
        state.counts["unexpected_count"] += len(extra)
        for key in _MAP_LISTS:
            values = list(result.get(key) or [])
            if key in ("unexpected_index_list", "partial_unexpected_index_list"):
                values += extra
            kept = state.lists.setdefault(key, [])
            kept.extend(values[: max(0, SAMPLE - len(kept))])
            state.counts[f"{key}_length"] = state.counts.get(f"{key}_length", 0) + len(values)
        for entry in result.get("partial_unexpected_counts") or []:
            state.partial_counts[_hashable(entry.get("value"))] += int(entry.get("count") or 0)
        state.success = state.success and bool(item.success) and not extra

    @staticmethod
    def _add_combined(state: _State, item: Any, frame: pd.DataFrame) -> None:
        if state.item is None:
            state.item = item
        config = item.expectation_config
        kind, column = config.type, config.kwargs.get("column")
        observed = (item.result or {}).get("observed_value")
        parts = state.values
        if kind == "expect_table_row_count_to_be_between":
            parts["table.row_count"] = parts.get("table.row_count", 0) + int(observed or 0)
        elif kind == "expect_column_mean_to_be_between":
            weight = int(frame[column].count())
            if observed is not None and weight:
                parts["sum"] = parts.get("sum", 0.0) + float(observed) * weight
                parts["count"] = parts.get("count", 0) + weight
        elif kind in ("expect_column_min_to_be_between", "expect_column_max_to_be_between"):
            if observed is not None:
                pick = min if kind.endswith("min_to_be_between") else max
                parts["value"] = observed if "value" not in parts else pick(parts["value"], observed)
        else:  # distinct values to contain set: a value is missing when no chunk has it
            present = set(frame[column].dropna().unique().tolist())
            missing = {v for v in config.kwargs["value_set"] if v not in present}
            parts["missing"] = missing if "missing" not in parts else parts["missing"] & missing

    def result(self, meta: dict[str, Any]) -> Any:
        """The partition's ``ExpectationSuiteValidationResult`` (lists sampled, see ``SAMPLE``)."""
        from great_expectations.core import ExpectationSuiteValidationResult
        from great_expectations.core.expectation_validation_result import ExpectationValidationResult
        from great_expectations.validator.validation_statistics import calc_validation_statistics

        if self._only is not None:  # one chunk: GX's own result, lists sampled
            for item in self._only.results:
                _sampled(item)
            self._only.meta.update(meta)
            return self._only
        results = []
        for expectation, state in zip(self.suite.expectations, self._states, strict=True):
            how = rule(expectation)
            item = state.item
            if item is None or state.raised or how not in ("map", "unique", "combined"):
                results.append(_sampled(item))
                continue
            if how == "combined":
                judged = _judge_combined(item.expectation_config, state.values)
                results.append(
                    ExpectationValidationResult(
                        success=judged["success"],
                        result=judged.get("result", {}),
                        expectation_config=item.expectation_config,
                        exception_info=item.exception_info,
                    )
                )
                continue
            results.append(
                ExpectationValidationResult(
                    success=state.success,
                    result=self._map_result(item.result or {}, state),
                    expectation_config=item.expectation_config,
                    exception_info=item.exception_info,
                )
            )
        statistics = calc_validation_statistics(results)
        return ExpectationSuiteValidationResult(
            results=results,
            success=statistics.success,
            suite_name=self.suite.name,
            statistics={
                "evaluated_expectations": statistics.evaluated_expectations,
                "successful_expectations": statistics.successful_expectations,
                "unsuccessful_expectations": statistics.unsuccessful_expectations,
                "success_percent": statistics.success_percent,
                "chunks": self.chunks,
            },
            meta=meta,
        )

    @staticmethod
    def _map_result(first: dict[str, Any], state: _State) -> dict[str, Any]:
        counts = state.counts
        elements, missing, unexpected = (
            counts["element_count"],
            counts["missing_count"],
            counts["unexpected_count"],
        )
        present = elements - missing
        result = dict(first)
        result.update(
            element_count=elements,
            missing_count=missing,
            missing_percent=100 * missing / elements if elements else None,
            unexpected_count=unexpected,
            unexpected_percent=100 * unexpected / present if present else None,
            unexpected_percent_total=100 * unexpected / elements if elements else None,
            unexpected_percent_nonmissing=100 * unexpected / present if present else None,
        )
        for key in _MAP_LISTS:
            if key not in first and not state.lists.get(key):
                continue
            result[key] = state.lists.get(key, [])
            length = counts.get(f"{key}_length", 0)
            if length > len(result[key]):
                result[f"{key}_truncated_from"] = length
        if "partial_unexpected_counts" in first:
            result["partial_unexpected_counts"] = [
                {"value": value, "count": count} for value, count in state.partial_counts.most_common(SAMPLE)
            ]
        return result


def _raised(item: Any) -> bool:
    info = item.exception_info or {}
    if info.get("raised_exception"):
        return True
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


def _sampled(item: Any) -> Any:
    """A single chunk's result as the record keeps it: index and value lists cut to ``SAMPLE``."""
    if item is None:
        return item
    result = item.result or {}
    for key in _MAP_LISTS:
        values = result.get(key)
        if isinstance(values, list) and len(values) > SAMPLE:
            result[key] = values[:SAMPLE]
            result[f"{key}_truncated_from"] = len(values)
    result.pop("unexpected_index_query", None)
    return item


def _judge_combined(config: Any, parts: dict[str, Any]) -> dict[str, Any]:
    """GX's verdict on the metric combined across chunks (the expectation's own ``_validate``)."""
    kind = config.type
    metric = COMBINED[kind]
    if kind == "expect_table_row_count_to_be_between":
        metrics = {metric: parts.get("table.row_count", 0)}
    elif kind == "expect_column_mean_to_be_between":
        metrics = {metric: parts["sum"] / parts["count"] if parts.get("count") else None}
    elif kind in ("expect_column_min_to_be_between", "expect_column_max_to_be_between"):
        metrics = {metric: parts.get("value")}
    else:
        missing = sorted(parts.get("missing", set()), key=repr)
        metrics = {metric: missing, f"{metric}.count": len(missing)}
    judged = config.to_domain_obj()._validate(
        metrics=metrics, runtime_configuration={"result_format": {"result_format": "SUMMARY"}}
    )
    if not isinstance(judged, dict):
        judged = judged.to_json_dict()
    return judged
