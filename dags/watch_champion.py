"""
### Watch the new champion after a promotion

Scheduled on the **champion** Asset, which `evaluate_and_promote`'s `promote` publishes: a separate DAG, so
no watch holds the one-run promotion queue.

1. **plan_watch** - what was promoted, from which previous champion and when, read from the version's
   signed `promoted` attestation (the version must still verify); the first champion has no previous and
   is not watched. On the local platform it replays the dataset's holdout rows through the router as
   traffic (Variable `tollgate_watch`: `replay`).
2. **wait_watch_period** - defers (no worker slot) until `watch_s` after the promotion.
3. **judge** - from the prediction log: the requests the new champion served since its promotion against
   those the previous champion served over its last `baseline_s` as champion — error rate (mSPRT + hard
   limit), latency shift (Mann-Whitney, Hodges-Lehmann interval) and p99 ratio (bootstrap), Holm at the
   watch's `alpha`. PASS, FAIL, or INCONCLUSIVE (too few requests: nothing changes). The verdict is stored
   once under `<tollgate_storage_root>/watches/` (a cleared judge reads it back, it does not draw again)
   and tagged on the version (`tollgate.watch.verdict`).
4. **roll_back** (FAIL only) - the previous version becomes champion again through the rollback path:
   re-verified (signature, approval and promotion attestations), a signed `automatic_rollback`
   attestation, the rollback record with the reasons on both versions. Nothing happens when the watched
   version is no longer the champion (promoted over or rolled back meanwhile).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.sdk import dag, task

from tollgate.assets import CHAMPION_MODEL
from tollgate.config import ALIAS_POOL

default_args = {"owner": "tollgate", "retries": 2, "retry_delay": timedelta(seconds=10)}


@dag(
    schedule=[CHAMPION_MODEL],
    catchup=False,
    max_active_runs=4,
    tags=["tollgate", "promotion", "watch"],
    default_args=default_args,
    doc_md=__doc__,
)
def watch_champion():
    @task
    def plan_watch(**context: Any) -> dict[str, Any]:
        from datetime import UTC, datetime

        from airflow.sdk.exceptions import AirflowSkipException

        from tollgate.evaluation.champion_watch import is_champion, load_plan, replay_traffic, until_of

        facts = _facts(context)
        if facts["previous"] is None:
            raise AirflowSkipException(f"v{facts['version']} is the first champion: nothing to compare with")
        if not is_champion(facts):
            raise AirflowSkipException(f"v{facts['version']} is no longer the champion: nothing to watch")
        plan = load_plan()
        until = datetime.fromtimestamp(until_of(facts, plan), UTC).isoformat()
        print(
            f"watching {facts['model_name']} v{facts['version']} against v{facts['previous']} until {until}"
        )
        if plan.replay:
            print(f"replayed traffic: {replay_traffic(facts, plan)}")
        return {**facts, "until_iso": until}  # for the sensor and the UI; later tasks derive their own

    @task
    def judge(**context: Any) -> dict[str, Any]:
        from tollgate.evaluation.champion_watch import judge_watch, load_plan

        facts = _facts(context)
        record = judge_watch(facts, load_plan())
        print(
            f"watch of v{facts['version']} vs v{facts['previous']}: {record['verdict']} {record['reasons']}"
        )
        return record

    @task.branch
    def decide(record: dict[str, Any]) -> str:
        return "roll_back" if record["verdict"] == "FAIL" else "keep"

    @task(pool=ALIAS_POOL)
    def roll_back(**context: Any) -> dict[str, Any]:
        """Acts on the verdict stored in storage, never on the XCom of judge (users can patch XComs)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from tollgate.evaluation.champion_watch import NotChampionAnyMore, roll_back_watched
        from tollgate.evaluation.decisions import airflow_context, keys_from_airflow, refusals_fail_the_task

        facts = _facts(context)
        with refusals_fail_the_task():
            try:
                done = roll_back_watched(
                    facts, context["run_id"], keys_from_airflow(with_private=True), airflow_context(context)
                )
            except NotChampionAnyMore as moved:
                raise AirflowSkipException(str(moved)) from None
        print(f"AUTOMATIC ROLLBACK {facts['model_name']}: v{done['from_version']} -> v{done['to_version']}")
        return done

    planned = plan_watch()
    wait = DateTimeSensorAsync(
        task_id="wait_watch_period", target_time="{{ ti.xcom_pull(task_ids='plan_watch')['until_iso'] }}"
    )
    judged = judge()
    planned >> wait >> judged
    decide(judged) >> [roll_back(), EmptyOperator(task_id="keep")]


def _facts(context: Any) -> dict[str, Any]:
    """What was promoted, from what and when: the run's champion event names the version, its signed
    promoted attestation says the rest (every task derives them again; none trusts another's XCom)."""
    from tollgate.evaluation.champion_watch import watched
    from tollgate.evaluation.decisions import keys_from_airflow, refusals_fail_the_task

    # events that queued while the DAG was paused or busy arrive together, in no promised order: oldest first
    events = sorted(context["triggering_asset_events"].get(CHAMPION_MODEL) or [], key=lambda e: e.timestamp)
    with refusals_fail_the_task():
        return watched([e.extra or {} for e in events], keys_from_airflow(with_private=False))


watch_champion()
