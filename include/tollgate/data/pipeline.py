"""The work of the ``dataset_ingest`` DAG's tasks, as plain functions the DAG wires and tests call.

``IngestSettings.from_variables`` turns Airflow Variables into typed settings, ``resolve_partition``
picks the day a run ingests, ``ensure_landed`` lands it from the generator when the simulated upstream
is on, ``gate`` and ``version`` wrap the validation gate and the DVC versioning. No Airflow import
here: the DAG passes values in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tollgate import storage
from tollgate.config import default_for
from tollgate.data import generator
from tollgate.data.gate import GateOutcome, run_gate
from tollgate.data.landing_events import from_watcher
from tollgate.data.suite import GateThresholds
from tollgate.data.versioning import DataRepo

SETTING_NAMES = (
    "tollgate_landing_uri",
    "tollgate_storage_root",
    "tollgate_data_repo",
    "tollgate_dvc_remote",
    "tollgate_window_days",
    "tollgate_quarantine_max_share",
    "tollgate_partition_rows",
    "tollgate_label_rate",
    "tollgate_simulate_upstream",
    "tollgate_simulated_rows",
)


class PartitionNotFound(ValueError):
    """The run cannot tell which day to ingest (a configuration or caller error: do not retry)."""


class PartitionNotLanded(RuntimeError):
    """The day's partition is not in the landing area yet (upstream late: a retry may succeed)."""


def _pair(name: str, raw: str, cast: Callable[[str], float]) -> tuple[Any, Any]:
    try:
        low, high = (cast(part.strip()) for part in raw.split(","))
    except ValueError:
        raise ValueError(
            f"Variable {name}={raw!r} must be two numbers 'min,max', e.g. {default_for(name)!r}."
        ) from None
    return low, high


@dataclass(frozen=True)
class IngestSettings:
    landing_uri: str
    storage_root: str
    data_repo: str
    dvc_remote: str
    window_days: int
    thresholds: GateThresholds
    simulate_upstream: bool
    simulated_rows: int

    @classmethod
    def from_variables(cls, get: Callable[[str], str]) -> IngestSettings:
        """Settings from a Variable getter (``name -> value``; the DAG passes Variable.get + defaults)."""
        raw = {name: str(get(name)).strip() for name in SETTING_NAMES}
        min_rows, max_rows = _pair("tollgate_partition_rows", raw["tollgate_partition_rows"], int)
        label_min, label_max = _pair("tollgate_label_rate", raw["tollgate_label_rate"], float)
        try:
            window_days = int(raw["tollgate_window_days"])
            max_share = float(raw["tollgate_quarantine_max_share"])
            rows = int(raw["tollgate_simulated_rows"])
        except ValueError as exc:
            raise ValueError(
                f"A data-stage Variable is not a number: {exc}. See config.VARIABLE_DEFAULTS."
            ) from None
        simulate = raw["tollgate_simulate_upstream"].lower()
        if simulate not in ("auto", "true", "false"):
            raise ValueError(f"Variable tollgate_simulate_upstream={simulate!r}: use auto, true or false.")
        landing = raw["tollgate_landing_uri"]
        return cls(
            landing_uri=landing,
            storage_root=raw["tollgate_storage_root"],
            data_repo=raw["tollgate_data_repo"],
            dvc_remote=raw["tollgate_dvc_remote"],
            window_days=window_days,
            thresholds=GateThresholds(
                min_rows=min_rows,
                max_rows=max_rows,
                label_rate_min=label_min,
                label_rate_max=label_max,
                max_bad_share=max_share,
            ),
            simulate_upstream=simulate == "true" or (simulate == "auto" and not storage.is_remote(landing)),
            simulated_rows=rows,
        )


def resolve_partition(
    *,
    param: str | None,
    triggering_extras: Sequence[Mapping[str, Any]],
    data_interval_start: datetime | None,
    log: Callable[[str], None] = print,
) -> tuple[str, str]:
    """The day this run ingests and why: Param ``partition``, else the landing event, else the interval."""
    if param:
        return generator.parse_day(param).isoformat(), "param"
    if triggering_extras:
        days = announced_days(triggering_extras)
        if len(days) > 1:
            log(
                f"Landing events for several days reached this run ({', '.join(days)}): ingesting the "
                f"earliest, {days[0]}, now; the others are announced again, so the next runs ingest "
                "each of them, once, in date order."
            )
        return days[0], "landing asset event"
    if data_interval_start is not None:
        return data_interval_start.date().isoformat(), "data interval"
    raise PartitionNotFound(
        "This run has no data interval, no landing asset event and no Param partition: set the Param "
        "partition (YYYY-MM-DD) to choose the day to ingest."
    )


def announced_days(triggering_extras: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every day the landing events name, once, in date order.

    An event names one day (``partition``, what the upstream system posts) or several (``partitions``,
    what a run posts again for the days it left to the next runs).
    """
    days: set[str] = set()
    for event_extra in triggering_extras:
        extra = from_watcher(event_extra)  # an S3 notification through the landing-queue watcher
        named = extra.get("partitions") or ([extra["partition"]] if extra.get("partition") else [])
        if not named:
            raise PartitionNotFound(
                "A landing asset event has no 'partition' in its extra. The upstream system must post "
                'POST /api/v2/assets/events {"asset_id": <id of landing_ad_impressions>, '
                '"extra": {"partition": "YYYY-MM-DD"}}.'
            )
        days.update(generator.parse_day(str(day)).isoformat() for day in named)
    return sorted(days)


def remaining_days(triggering_extras: Sequence[Mapping[str, Any]], ingesting: str) -> list[str]:
    """The announced days after the one this run ingests: the next runs' work, in date order."""
    if not triggering_extras:
        return []
    return [day for day in announced_days(triggering_extras) if day > ingesting]


def ensure_landed(
    settings: IngestSettings, partition: str, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Check the landing partition exists; land it from the generator when the simulated upstream is on."""
    uri = generator.partition_uri(settings.landing_uri, partition)
    if storage.exists(uri):
        log(f"Landing partition found: {uri}")
        return {"partition": partition, "uri": uri, "simulated": False}
    if not settings.simulate_upstream:
        raise PartitionNotLanded(
            f"Landing partition {uri} does not exist: the upstream system has not delivered dt={partition}. "
            "Rerun when it lands (or let the upstream post a landing asset event). For a demo, land one with "
            f"`python -m tollgate.data.land --date {partition} --landing {settings.landing_uri}` or set the "
            "Variable tollgate_simulate_upstream to true."
        )
    landed = generator.land(partition, settings.landing_uri, rows=settings.simulated_rows)
    log(f"Simulated upstream landed {landed.rows} rows at {landed.uri} (Variable tollgate_simulate_upstream)")
    return {"partition": partition, "uri": landed.uri, "simulated": True}


def gate(settings: IngestSettings, partition: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the validation gate; raises ``tollgate.data.gate.BatchRejected`` on a rejected batch."""
    outcome: GateOutcome = run_gate(
        settings.landing_uri, settings.storage_root, partition, settings.thresholds, log=log
    )
    return outcome.as_dict()


def version(
    settings: IngestSettings, outcome: Mapping[str, Any], log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Publish the curated window ending at the gated partition as a DVC version; returns its extra."""
    repo = DataRepo(settings.data_repo, settings.dvc_remote, window_days=settings.window_days)
    result = repo.publish(
        outcome["partition"],
        outcome["clean_uri"],
        outcome["quarantined_rows"],
        gate=dict(outcome),
        log=log,
    )
    return {**result.as_extra(), "created": result.created, "report_uri": outcome.get("report_uri")}
