"""A newer challenger supersedes the older ``evaluate_and_promote`` runs, at whatever stage they are.

Without this, one run waiting up to 24 h for an approval holds every later challenger back, and
approvers may be asked about a model that is already obsolete. When a run starts evaluating version N,
every other active run of the DAG that evaluates an older version of the same model is ended: its run
is set to failed with a note (a pending approval is closed with it, a running gate stopped), the old
version gets the tags ``tollgate.superseded_by`` / ``tollgate.superseded_at``, and the approvers are
told. A run that has not resolved its challenger yet needs nothing: it skips itself when it sees the
newer ``challenger`` alias (see :mod:`tollgate.evaluation.selection`).

The runs are changed through the Airflow REST API (the official client) as the service user of the
Connection ``tollgate_airflow_service`` (http: host = Airflow URL, login and password of a user with the
op role); ``make up`` creates it locally.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

API_CONN_ID = "tollgate_airflow_service"
TAG_SUPERSEDED_BY = "tollgate.superseded_by"
TAG_SUPERSEDED_AT = "tollgate.superseded_at"


@dataclass(frozen=True)
class Superseded:
    run_id: str
    version: str


def older_runs(
    runs: Sequence[Mapping[str, Any]],
    challenger_of: Callable[[str], Mapping[str, Any] | None],
    me: str,
    model_name: str,
    version: str,
) -> list[Superseded]:
    """The active runs (other than ``me``) that evaluate an older version of ``model_name``."""
    found = []
    for run in runs:
        run_id = str(run["dag_run_id"])
        if run_id == me or run.get("state") not in ("running", "queued"):
            continue
        theirs = challenger_of(run_id)
        if not theirs or str(theirs.get("model_name")) != model_name:
            continue  # not resolved yet (it will skip itself) or another model
        if str(theirs.get("version", "")).isdigit() and int(theirs["version"]) < int(version):
            found.append(Superseded(run_id, str(theirs["version"])))
    return found


def supersede_older_runs(
    api: Any,
    dag_id: str,
    me: str,
    model_name: str,
    version: str,
    record: Callable[[Superseded], None],
    log: Callable[[str], None] = print,
) -> list[Superseded]:
    """End the older runs through ``api`` (a ``tollgate.platform.api.AirflowClient``); return them."""
    from tollgate.platform.api import AirflowAPIError

    active = api.dag_runs.get_dag_runs(dag_id, state=["running", "queued"], limit=100).dag_runs
    runs = [{"dag_run_id": run.dag_run_id, "state": str(run.state.value)} for run in active]

    def challenger_of(run_id: str) -> Mapping[str, Any] | None:
        try:
            value = api.xcom(dag_id, run_id, "resolve_challenger")
        except AirflowAPIError as error:
            if error.status == 404:
                return None
            raise
        return value if isinstance(value, Mapping) else None

    ended = older_runs(runs, challenger_of, me, model_name, version)
    for old in ended:
        note = f"Superseded by {model_name} v{version} (run {me}): v{old.version} is no longer evaluated."
        # Recorded on the version first: whoever sees the run end finds the reason on the version too.
        record(old)
        # Failing the run fails its unfinished tasks, an approval awaiting input included.
        state = end_as_failed(api, dag_id, old.run_id, note, log)
        log(f"SUPERSEDED run {old.run_id} ({model_name} v{old.version}), now {state}: {note}")
    if not ended:
        log(f"No older run of {dag_id} evaluates an older version of {model_name}: nothing superseded.")
    return ended


def end_as_failed(
    api: Any,
    dag_id: str,
    run_id: str,
    note: str,
    log: Callable[[str], None],
    timeout_s: float = 300.0,
    settle_s: float = 3.0,
) -> str:
    """Fail the run, and keep it failed; returns the state it ended in.

    Airflow leaves a run running while one of its teardown tasks is pending or running (the teardown still
    runs; here ``end_rollout_teardown``), and when the teardown ends the scheduler decides the run's state
    from its leaves. With the superseded approval failed and the leaves skipped, that is *success*. So once
    such a run has finished, it is failed again (a finished run has no teardown left: that patch holds).
    "failed" must also be read twice, ``settle_s`` apart: a scheduler loop that read the run as running just
    before the patch may still write its own verdict over it."""
    from airflow_client.client import DAGRunPatchBody

    api.dag_runs.patch_dag_run(dag_id, run_id, DAGRunPatchBody(state="failed", note=note))
    deadline = time.monotonic() + timeout_s
    failed_since: float | None = None
    while True:
        state = str(api.dag_runs.get_dag_run(dag_id, run_id).state.value)
        if state == "failed":
            if failed_since is None:
                failed_since = time.monotonic()
            if time.monotonic() - failed_since >= settle_s:
                return state
            time.sleep(0.5)
            continue
        failed_since = None
        if time.monotonic() > deadline:
            log(f"Run {run_id} is still {state} after {timeout_s:.0f} s (a teardown still running); "
                "its other unfinished tasks are failed or skipped.")  # fmt: skip
            return state
        if state not in ("running", "queued"):
            log(f"Run {run_id} ended {state} after it was failed (a pending teardown or a scheduler loop "
                "finished it); failing it again.")  # fmt: skip
            api.dag_runs.patch_dag_run(dag_id, run_id, DAGRunPatchBody(state="failed", note=note))
            continue
        time.sleep(0.25)


def supersede_from_task(challenger: Mapping[str, str], context: Any) -> list[dict[str, str]]:
    """The DAG task's body: end older runs, record it on their versions, tell the approvers."""
    from datetime import UTC, datetime

    from airflow.sdk import BaseHook

    from tollgate.evaluation.notify import superseded_message, tell_approvers
    from tollgate.platform.api import AirflowClient
    from tollgate.registry.register import mlflow_client
    from tollgate.runtime import mlflow_uri, setting

    name, version = challenger["model_name"], str(challenger["version"])
    registry = mlflow_client(mlflow_uri())
    approvers = setting("tollgate_approvers").replace(",", " ").split()

    def record(old: Superseded) -> None:
        registry.set_model_version_tag(name, old.version, TAG_SUPERSEDED_BY, version)
        registry.set_model_version_tag(name, old.version, TAG_SUPERSEDED_AT, datetime.now(UTC).isoformat())
        tell_approvers(approvers, *superseded_message(name, old.version, version))

    api = AirflowClient.from_connection(BaseHook.get_connection(API_CONN_ID))
    ended = supersede_older_runs(api, context["dag"].dag_id, context["run_id"], name, version, record)
    return [{"run_id": old.run_id, "version": old.version} for old in ended]
