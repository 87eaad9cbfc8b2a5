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
from tollgate.extensions import scoped

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
    "tollgate_gate_chunk_rows",
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
    chunk_rows: int = 500_000  # rows the gate and the curated window hold at once (0: whole partition)

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
            chunk_rows = int(raw["tollgate_gate_chunk_rows"])
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
            # Each example versions into its own repository and remote (the default one: the Variables').
            data_repo=scoped(raw["tollgate_data_repo"]),
            dvc_remote=scoped(raw["tollgate_dvc_remote"]),
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
            chunk_rows=chunk_rows,
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
                'POST /api/v2/assets/events {"asset_id": <id of landing_data>, '
                '"extra": {"partition": "YYYY-MM-DD"}}.'
            )
        days.update(generator.parse_day(str(day)).isoformat() for day in named)
    return sorted(days)


def remaining_days(triggering_extras: Sequence[Mapping[str, Any]], ingesting: str) -> list[str]:
    """The announced days after the one this run ingests: the next runs' work, in date order."""
    if not triggering_extras:
        return []
    return [day for day in announced_days(triggering_extras) if day > ingesting]


def run_example(param: str | None, triggering_extras: Sequence[Mapping[str, Any]]) -> str:
    """Which example a run ingests: Param ``example``, else the landing events' ``example``, else the
    configured one (env TOLLGATE_EXAMPLE). Events naming different examples are refused."""
    from tollgate import extensions

    if param:
        return str(param)
    named = sorted({str(e["example"]) for e in triggering_extras if e.get("example")})
    if len(named) > 1:
        raise PartitionNotFound(
            f"Landing events for different examples {named} reached one run: post one event per example "
            "and partition, or trigger with the Param example."
        )
    return named[0] if named else extensions.configured()


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
        settings.landing_uri,
        settings.storage_root,
        partition,
        settings.thresholds,
        log=log,
        chunk_rows=settings.chunk_rows,
    )
    return outcome.as_dict()


def version(
    settings: IngestSettings, outcome: Mapping[str, Any], log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Publish the curated window ending at the gated partition as a DVC version; returns its extra."""
    repo = DataRepo(
        settings.data_repo,
        settings.dvc_remote,
        window_days=settings.window_days,
        chunk_rows=settings.chunk_rows,
    )
    result = repo.publish(
        outcome["partition"],
        outcome["clean_uri"],
        outcome["quarantined_rows"],
        gate=dict(outcome),
        log=log,
    )
    return {**result.as_extra(), "created": result.created, "report_uri": outcome.get("report_uri")}


def publish_decision(
    dataset: Mapping[str, Any], published_extras: Sequence[Mapping[str, Any]], *, republish: bool = False
) -> tuple[bool, str]:
    """Whether this run publishes the curated-dataset event for ``dataset``, and why.

    ``published_extras``: the extras of the curated-dataset events Airflow already holds. One event per
    version: a version some event names (same rev and data repository) is not published again unless
    ``republish`` asks for it (a second event would only retrain the same data). A version that already
    existed but that no event names was made by a run that ended before publishing (crash, cleared run):
    this run publishes it, or nothing downstream would ever train on it.
    """
    rev, repo, tag = dataset["rev"], dataset.get("data_repo"), dataset.get("tag") or dataset["rev"]
    named = [e for e in published_extras if e.get("rev") == rev and e.get("data_repo", repo) == repo]
    if republish:
        return True, f"Publishing {tag} ({rev}) again: Param republish is set."
    if named:
        return False, (
            f"Version {tag} ({rev}) was published already ({len(named)} curated-dataset event(s) name it); "
            "no new asset event. Trigger with Param republish=true to publish it again."
        )
    if dataset.get("created"):
        return True, f"Publishing the new version {tag} ({rev})."
    return True, (
        f"Version {tag} ({rev}) already existed, but no curated-dataset event names it yet (the run that "
        "made it ended before publishing): publishing it now."
    )
