"""
### Ingest one day of landed data: validate, quarantine, version, publish

The data, its schema and its Great Expectations suite are the active example's (env `TOLLGATE_EXAMPLE`,
default `ctr`: ad impressions), or the one a run names (Param `example`, or `"example"` in the landing
event's extra).

Runs **daily** for its data interval, and **also whenever the upstream system posts an asset event** on
`landing_data` through the REST API with the day in `extra`:

```
GET  /api/v2/assets?uri_pattern=tollgate.landing.data      -> the asset id
POST /api/v2/assets/events  {"asset_id": <id>, "extra": {"partition": "2024-03-01"}}
```

Backfill (from the clone, against the local platform):
```
.venv/bin/tollgate airflow backfill create --dag-id dataset_ingest --from-date 2024-03-01 --to-date 2024-03-03
```
gives one dataset version per day, in date order (one run at a time); running it again changes nothing.

1. **locate_partition** - the day to ingest: Param `partition`, else the landing event's `partition`,
   else the data interval. When events for several days reach one run (they queue while a run is
   busy), it ingests the earliest and **announce_remaining** posts the others again on the landing
   asset, so every announced day is ingested, once, in date order, one run each.
   Checks `<tollgate_landing_uri>/dt=YYYY-MM-DD/<the example's landing file>` exists; with the simulated
   upstream on (Variable `tollgate_simulate_upstream`: `auto` = only for a local landing folder)
   a missing day is landed by the built-in generator.
2. **validate** - the Great Expectations gate (the example's suite; click-through: `tollgate.data.suite`):
   schema and types, non-nulls, value ranges, allowed sets, unique event ids, row count, label rate, event
   times inside the day. Rows failing row-level expectations go to
   `<tollgate_storage_root>/quarantine/dt=.../` with the names of the expectations they failed; the
   clean rows go on. A broken schema, a failed
   batch expectation, or more bad rows than `tollgate_quarantine_max_share` **rejects the partition**:
   it is quarantined whole with its report, the task fails naming the expectations, nothing is
   versioned or published. Results: JSON + GX Data Docs under `<storage_root>/reports/dt=.../`,
   browsable from the UI menu **Browse > Data quality reports**.
3. **version_dataset** - the curated training set (the last `tollgate_window_days` clean days) becomes
   a DVC version in the data repository `tollgate_data_repo` (remote `tollgate_dvc_remote`): a commit
   and tag `data-YYYY-MM-DD`. Unchanged content returns the existing version.
4. **publish** - an asset event on `curated_dataset` (rev, tag, content_hash, rows,
   quarantined_rows, window, partition, data_repo, data_path, run_type), which schedules `train_model`
   (which trains on the newest version only, and not on a backfill's). One event per version: a rerun
   whose version an event already names publishes nothing, unless the Param `republish` is set; a
   version that exists but that no event names (its run ended before publishing) is published by the
   cleared or next run.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, Param, dag, task

from tollgate.assets import CURATED_DATASET, watched_landing

log = logging.getLogger("tollgate.dataset_ingest")
# With an AssetWatcher on the landing bucket's SQS queue when TOLLGATE_LANDING_QUEUE_URL is set (the same
# object in the schedule and the outlet: Airflow keeps the watchers of the last one it collects).
LANDING_IMPRESSIONS = watched_landing()

default_args = {"owner": "tollgate", "retries": 2, "retry_delay": timedelta(seconds=30)}


def _settings() -> Any:
    from tollgate.data.pipeline import IngestSettings
    from tollgate.runtime import setting

    return IngestSettings.from_variables(setting)


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable("@daily", timezone="UTC"), assets=LANDING_IMPRESSIONS
    ),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["tollgate", "data"],
    default_args=default_args,
    doc_md=__doc__,
    params={
        "partition": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Day to ingest (YYYY-MM-DD); empty = the landing event's day or the data interval",
        ),
        "example": Param(
            None,
            type=["null", "string"],
            description="Example (dataset) to ingest: ctr, digits or a module path; empty = the landing "
            "event's example or the configured one (env TOLLGATE_EXAMPLE)",
        ),
        "republish": Param(
            False,
            type="boolean",
            description="Publish the curated-dataset asset event even when the version already existed",
        ),
    },
)
def dataset_ingest():
    @task(retry_delay=timedelta(minutes=10))
    def locate_partition(**context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from tollgate import extensions
        from tollgate.data.pipeline import (
            PartitionNotFound,
            ensure_landed,
            remaining_days,
            resolve_partition,
            run_example,
        )

        events = context["triggering_asset_events"].get(LANDING_IMPRESSIONS) or []
        try:
            example = run_example(context["params"].get("example"), [event.extra or {} for event in events])
            extensions.load(example)  # a bad name fails here, naming the fix
            settings = _settings()
            partition, reason = resolve_partition(
                param=context["params"].get("partition"),
                triggering_extras=[event.extra or {} for event in events],
                data_interval_start=context.get("data_interval_start"),
                log=log.warning,
            )
        except (PartitionNotFound, ValueError) as exc:
            raise AirflowFailException(str(exc)) from exc
        log.info("Ingesting dt=%s of example %s (from the %s)", partition, example, reason)
        remaining = remaining_days([event.extra or {} for event in events], partition)
        with extensions.using(example):
            landed = ensure_landed(settings, partition, log=log.info)
        return {**landed, "reason": reason, "remaining": remaining, "example": example}

    @task(outlets=[LANDING_IMPRESSIONS])
    def announce_remaining(landed: dict[str, Any], **context: Any) -> list[str]:
        """Days announced to this run besides its own go back on the landing asset: never dropped."""
        from airflow.sdk.exceptions import AirflowSkipException

        remaining = landed.get("remaining") or []
        if not remaining:
            raise AirflowSkipException("No other day was announced to this run: nothing to pass on.")
        log.info("Announcing %s again: the next runs ingest them, one day per run, in date order", remaining)
        context["outlet_events"][LANDING_IMPRESSIONS].extra = {
            "partitions": remaining,
            "announced_by": context["run_id"],
            **({"example": landed["example"]} if landed.get("example") else {}),
        }
        return remaining

    @task
    def validate(landed: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from tollgate import extensions
        from tollgate.data.gate import BatchRejected
        from tollgate.data.pipeline import gate

        try:
            with extensions.using(landed.get("example")):
                return {
                    **gate(_settings(), landed["partition"], log=log.info),
                    "example": landed.get("example"),
                }
        except BatchRejected as exc:
            raise AirflowFailException(str(exc)) from exc  # bad data: retrying cannot help

    @task
    def version_dataset(outcome: dict[str, Any]) -> dict[str, Any]:
        from tollgate import extensions
        from tollgate.data.pipeline import version

        with extensions.using(outcome.get("example")):
            return {**version(_settings(), outcome, log=log.info), "example": outcome.get("example")}

    @task(inlets=[CURATED_DATASET], outlets=[CURATED_DATASET])
    def publish(dataset: dict[str, Any], **context: Any):
        from airflow.sdk import Metadata
        from airflow.sdk.exceptions import AirflowSkipException

        from tollgate.data.pipeline import publish_decision

        # The curated events Airflow holds (its own record, not an XCom): was this version published?
        published = [event.extra or {} for event in context["inlet_events"][CURATED_DATASET]]
        go, why = publish_decision(dataset, published, republish=bool(context["params"].get("republish")))
        log.info(why)  # the task log says why (a skip's own message is not logged)
        if not go:
            raise AirflowSkipException(why)
        extra = {key: value for key, value in dataset.items() if key != "created"}
        # train_model does not retrain on a backfill's versions by default: it reads this.
        run_type = context["dag_run"].run_type
        extra["run_type"] = str(getattr(run_type, "value", run_type))
        log.info("Publishing %s: %s", CURATED_DATASET.name, extra)
        yield Metadata(CURATED_DATASET, extra)
        return extra

    landed = locate_partition()
    announce_remaining(landed)
    publish(version_dataset(validate(landed)))


dataset_ingest()
