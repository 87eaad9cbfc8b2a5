"""``make demo``: the main job on the embedded default, end to end, through the Airflow REST API.

``make demo EXAMPLE=digits`` (env ``TOLLGATE_EXAMPLE``) runs the same stages for another example: its
data, suite, trainer, packaging and gate; the runs name the example, so the DAGs are unchanged.

1. Start the local platform (or reuse the one running).
2. Land three days of the example's data (ad impressions by default; the middle one with injected bad
   rows) and ingest them:
   the upstream system's landing-asset events trigger ``dataset_ingest``; bad rows are quarantined.
3. Train on the latest dataset version with one injected spot interruption (SIGTERM at a step):
   the first try is preempted, the retry resumes from the checkpoint; the model is signed and
   registered as ``challenger``, whose Asset event schedules ``evaluate_and_promote``.
4. Gates pass; the demo approves as the ``approver`` user over REST, standing in for the person who
   would click Approve under Required Actions. The model becomes ``champion``.
5. A second, equally good model goes through shadow and canary 1 % -> 5 % -> 25 % on replayed traffic
   (the router serves the champion), passes every stage and is approved: it becomes ``champion``.
6. A slower model (Param ``quality=slow``: the delay is in its signed files) is rolled back by the canary
   analysis and rejected, without asking anyone.
7. A deliberately worse model (``quality=degraded``) is rejected by the offline gate.
For an example whose model the router does not serve, steps 5 and 6 say why the stages did not run.
The platform stays up afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow_client.client.exceptions import NotFoundException
from airflow_client.client.models import AssetEventResponse, DAGRunResponse, TaskInstanceHistoryResponse

from tollgate.platform.api import AirflowClient
from tollgate.platform.approvals import answer_approval, wait_for_pending_approval
from tollgate.platform.distributed import DistributedStack, stack_for
from tollgate.platform.processes import ServiceError
from tollgate.platform.stack import LocalStack

INGEST, TRAIN, PROMOTE, WATCH = "dataset_ingest", "train_model", "evaluate_and_promote", "watch_champion"
BAD_DAY_FAULT = "out_of_range"  # the click-through default; an example may name its own (demo_fault)
INTERRUPT_AT_STEP = 20


def demo_fault(dataset: Any) -> str:
    """The row-level fault the demo injects into the middle day: the example's choice, else the default."""
    return getattr(dataset, "demo_fault", None) or BAD_DAY_FAULT


def demo_rows(dataset: Any) -> int | None:
    """Rows per landed day: the example's choice (a small model trains on fewer), else the generator's."""
    return getattr(dataset, "demo_rows", None)


def describe_version(extra: dict[str, Any]) -> str:
    return (
        f"{extra.get('tag')} rev {extra['rev'][:10]} rows {extra['rows']} "
        f"quarantined {extra['quarantined_rows']} window {extra['window_start']}..{extra['window_end']}"
    )


def platform_setting(stack: LocalStack, name: str) -> str:
    """A Variable's value on ``stack``: its profile's own (e.g. S3 landing on the distributed profile), else
    the embedded default. The demo lands data where the platform's DAGs look for it."""
    from tollgate.config import default_for

    return stack.settings_overrides().get(name) or default_for(name)


def say(text: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {text}", flush=True)


class Laps:
    """Where the demo's time went: each phase's seconds since the previous phase ended."""

    def __init__(self, started: float | None = None):
        self.last = time.monotonic() if started is None else started
        self.phases: list[tuple[str, float]] = []

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append((phase, now - self.last))
        self.last = now

    def line(self) -> str:
        return "Phase times: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in self.phases)


class Demo:
    def __init__(self, stack: LocalStack, example: str = "ctr", laps: Laps | None = None):
        self.stack = stack
        self.example = example
        self.laps = laps or Laps()
        self.admin = AirflowClient(stack.airflow_url, "admin", stack.passwords()["admin"])
        self.summary: dict[str, Any] = {}

    # ---- helpers ---------------------------------------------------------------------------
    def runs(self, dag_id: str) -> list[DAGRunResponse]:
        return self.admin.dag_runs.get_dag_runs(dag_id, order_by=["-run_after"], limit=50).dag_runs

    def wait_idle(self, dag_id: str, timeout: float = 900) -> None:
        """Wait until no run of ``dag_id`` is queued or running."""
        deadline = time.monotonic() + timeout
        while any(r.state in ("queued", "running") for r in self.runs(dag_id)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} still has active runs after {timeout:.0f} s")
            time.sleep(2)

    def wait_new_run(self, dag_id: str, known: set[str], timeout: float = 300) -> DAGRunResponse:
        deadline = time.monotonic() + timeout
        while True:
            fresh = [r for r in self.runs(dag_id) if r.dag_run_id not in known]
            if fresh:
                return fresh[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new {dag_id} run within {timeout:.0f} s")
            time.sleep(1)

    def asset_events(self, uri: str) -> list[AssetEventResponse]:
        asset_id = self.admin.asset_id(uri)
        return self.admin.assets.get_asset_events(asset_id=asset_id, order_by=["timestamp"]).asset_events

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[TaskInstanceHistoryResponse]:
        return self.admin.task_instances.get_task_instance_tries(dag_id, run_id, task_id).task_instances

    # ---- stages ----------------------------------------------------------------------------
    def ingest(self, days: list[date]) -> None:
        from tollgate import extensions
        from tollgate.assets import CURATED_DATASET, LANDING_IMPRESSIONS
        from tollgate.data.generator import DEFAULT_ROWS, land

        landing = platform_setting(self.stack, "tollgate_landing_uri")
        dataset = extensions.load(self.example).dataset
        say(f"Stage 1: the upstream system lands {len(days)} days of {dataset.schema.name} in {landing}")
        for day in days:
            fault = demo_fault(dataset) if day == days[1] else None
            with extensions.using(self.example):
                landed = land(day, landing, fault=fault, rows=demo_rows(dataset) or DEFAULT_ROWS)
            say(f"  landed dt={day}: {landed.rows} rows" + (f" (injected fault: {fault})" if fault else ""))
        for dag_id in (INGEST,):
            self.admin.wait_for_dag(dag_id)
        self.admin.unpause(INGEST)
        time.sleep(3)  # the scheduler creates the run of the latest daily interval on unpause
        self.wait_idle(INGEST)
        # Unpausing ran the daily schedule for yesterday; a landing event for a day already versioned would
        # version it again with a different window (data-<day>-v2): one version per landed day instead.
        data_repo = platform_setting(self.stack, "tollgate_data_repo")
        versioned = set(dataset_tags(extensions.scoped(data_repo, self.example)))
        for day in days:
            if f"data-{day}" in versioned:
                say(f"  dt={day} was ingested by the daily schedule on unpause: no landing event needed")
                continue
            known = {r.dag_run_id for r in self.runs(INGEST)}
            self.admin.post_asset_event(
                LANDING_IMPRESSIONS.uri, {"partition": str(day), "example": self.example}
            )
            run = self.wait_new_run(INGEST, known)
            done = self.admin.wait_for_run(INGEST, run.dag_run_id, timeout=900)
            say(f"  landing event dt={day} -> {INGEST} run {run.dag_run_id}: {done.state.value}")
        from tollgate.events import newest_dataset_event

        events = [
            e
            for e in self.asset_events(CURATED_DATASET.uri)
            if (e.extra or {}).get("example") == self.example
        ]
        self.summary["dataset"] = newest_dataset_event([e.extra for e in events]).chosen
        self.summary["dataset_versions"] = [describe_version(e.extra) for e in events]
        self.summary["quarantined_total"] = sum(int(e.extra["quarantined_rows"]) for e in events)

    def train(self, conf: dict[str, Any], label: str) -> dict[str, Any]:
        self.admin.wait_for_dag(TRAIN)
        # The demo trains by hand (with its Params); the curated events queued for train_model would
        # otherwise start a second training on the same data as soon as it is unpaused.
        try:
            self.admin.assets.delete_dag_asset_queued_events(TRAIN)
            say(f"  cleared the curated-dataset events queued for {TRAIN}: this round is triggered by hand")
        except NotFoundException:
            pass  # nothing queued
        self.admin.unpause(TRAIN)
        known_promote = {r.dag_run_id for r in self.runs(PROMOTE)}
        run = self.admin.trigger(TRAIN, conf={"example": self.example, **conf})
        say(f"  {TRAIN} run {run.dag_run_id} ({label})")
        done = self.admin.wait_for_run(TRAIN, run.dag_run_id, timeout=1800)
        if done.state != "success":
            raise RuntimeError(f"{TRAIN} run {run.dag_run_id} ended {done.state.value}: see the Airflow UI")
        tries = self.tries(TRAIN, run.dag_run_id, "train_local")
        trained = self.admin.xcom(TRAIN, run.dag_run_id, "register_challenger")
        promote_run = self.wait_new_run(PROMOTE, known_promote)
        return {
            "run_id": run.dag_run_id,
            "tries": tries,
            "registered": trained,
            "promote_run": promote_run,
        }

    def run(self) -> dict[str, Any]:
        from tollgate.registry.names import CHAMPION

        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        days = [yesterday - timedelta(days=2), yesterday - timedelta(days=1), yesterday]
        self.ingest(days)
        self.laps.lap("ingest")

        for dag_id in (PROMOTE, WATCH):
            self.admin.wait_for_dag(dag_id)
            self.admin.unpause(dag_id)
        say(f"Stage 2: train on the latest dataset version, spot interruption at step {INTERRUPT_AT_STEP}")
        first = self.train(
            {"interruption": "sigterm_at_step", "interruption_value": INTERRUPT_AT_STEP},
            "one injected preemption",
        )
        self.summary["first"] = first
        say(f"  trained in {len(first['tries'])} tries: " + ", ".join(t.state.value for t in first["tries"]))
        registered = first["registered"]
        say(f"  registered {registered['model_name']} v{registered['version']} as challenger")

        say(f"Stage 3: {PROMOTE} run {first['promote_run'].dag_run_id} (scheduled by the challenger Asset)")
        self.approve(first["promote_run"].dag_run_id, "demo: gates passed")
        rounds = [first]
        self.laps.lap("first model")

        # The same Params: training is deterministic, so an equally good model (another seed can land just
        # past the offline gate's allowed AUC drop on a given day's data).
        say("Stage 4: an equally good model (trained again, same Params) goes through shadow and canary")
        good = self.train({}, "good challenger")
        self.summary["good"] = good
        evidence = self.evidence(good)
        rollout = evidence.get("rollout") or {}
        if rollout.get("ran"):
            say(
                "  stages: "
                + ", ".join(f"{stage} {verdict}" for stage, verdict in rollout["verdicts"].items())
            )
            known_watches = {r.dag_run_id for r in self.runs(WATCH)}  # the promotion's watch is a new run
            self.approve(good["promote_run"].dag_run_id, "demo: offline, shadow and canary gates passed")
            rounds.append(good)
            self.laps.lap("good challenger")
            self.wait_watch_replayed(known_watches)
            say("Stage 5: a slower model (Param quality=slow: its signed files add 40 ms to its predict)")
            slow = self.train({"quality": "slow"}, "slow model")
            self.summary["slow"] = slow
            ended = self.admin.wait_for_run(PROMOTE, slow["promote_run"].dag_run_id, timeout=900)
            say(f"  {PROMOTE}: {ended.state.value}, rolled back by the canary analysis without asking anyone")
            self.laps.lap("slow challenger")
            self.summary["watch"] = self.watch_verdict()
            say(f"  {WATCH} of the new champion: {self.summary['watch']}")
            self.laps.lap("watch")
        else:
            # another example's model is not the one the router serves: no live stages for it
            say(f"  no shadow or canary for this example: {rollout.get('note', 'no rollout')}")
            ended = self.admin.wait_for_run(PROMOTE, good["promote_run"].dag_run_id, timeout=900)
            say(f"  {PROMOTE}: {ended.state.value}")
            self.laps.lap("second model")

        say("Stage 6: a deliberately worse model (Param quality=degraded)")
        second = self.train({"quality": "degraded", "seed": 7}, "degraded model")
        self.summary["second"] = second
        rejected = self.admin.wait_for_run(PROMOTE, second["promote_run"].dag_run_id, timeout=900)
        say(f"  {PROMOTE}: {rejected.state.value}")
        self.laps.lap("degraded model")
        self.summary["approved"] = rounds

        from tollgate.evaluation.promotion import alias_version
        from tollgate.registry.register import mlflow_client

        client = mlflow_client(self.stack.mlflow_url)
        name = first["registered"]["model_name"]
        self.summary["champion"] = alias_version(client, name, CHAMPION)
        self.summary["approved_tags"] = [
            client.get_model_version(name, r["registered"]["version"]).tags for r in rounds
        ]
        return self.summary

    def approve(self, run_id: str, comment: str) -> None:
        """Answer the run's final approval as the ``approver`` user (standing in for the person)."""
        detail = wait_for_pending_approval(self.admin, PROMOTE, run_id, timeout=900)
        say(f"  approval requested from {[u.id for u in detail.assigned_users or []]}: {detail.subject}")
        approver = AirflowClient(self.stack.airflow_url, "approver", self.stack.passwords()["approver"])
        say("  the demo now answers as the `approver` user through the REST API, standing in for the person")
        answer_approval(approver, PROMOTE, run_id, "Approve", comment)
        promoted = self.admin.wait_for_run(PROMOTE, run_id, timeout=600)
        say(f"  {PROMOTE}: {promoted.state.value}")

    def wait_watch_replayed(self, known: set[str], timeout: float = 120) -> None:
        """Wait until the new champion's watch (a run not in ``known``) has sent its replayed requests
        (``plan_watch`` ended).

        The watch compares their latencies with those the previous champion showed: a training started
        beside them (torch on the same 2 cores) would slow the router for them alone, and the watch would
        roll back a good champion. Its wait and judgement still run beside the next round."""
        deadline = time.monotonic() + timeout
        run = self.wait_new_run(WATCH, known, timeout=timeout)
        while time.monotonic() < deadline:
            try:
                ti = self.admin.task_instances.get_task_instance(WATCH, run.dag_run_id, "plan_watch")
            except NotFoundException:
                ti = None
            state = getattr(ti.state, "value", ti.state) if ti is not None else None
            if state in ("success", "skipped", "failed"):
                say(f"  {WATCH} sent its traffic to the new champion; its wait and verdict go on beside")
                return
            time.sleep(0.5)
        say(f"  {WATCH} has not replayed its traffic after {timeout:.0f} s: going on")

    def watch_verdict(self, timeout: float = 300) -> str:
        """The verdict of the newest watch_champion run (the watch of the last promotion)."""
        deadline = time.monotonic() + timeout
        while not (runs := self.runs(WATCH)) and time.monotonic() < deadline:
            time.sleep(2)
        if not runs:
            return f"no {WATCH} run after {timeout:.0f} s"
        newest = max(runs, key=lambda r: r.run_after)
        done = self.admin.wait_for_run(WATCH, newest.dag_run_id, timeout=timeout)
        try:
            record = self.admin.xcom(WATCH, newest.dag_run_id, "judge")
        except NotFoundException:
            return f"run {done.state.value} without a verdict: see the UI"
        samples = record.get("samples", {})
        sides = f"{samples.get('new')} requests of the new champion vs {samples.get('previous')} of previous"
        return f"{record['verdict']} ({sides}) {'; '.join(record['reasons'])}"

    def evidence(self, trained: dict[str, Any]) -> dict[str, Any]:
        """The evidence the run's gates assembled (shown in the summary; the gates read their records)."""
        run_id = trained["promote_run"].dag_run_id
        deadline = time.monotonic() + 900
        while True:
            try:
                return self.admin.xcom(PROMOTE, run_id, "assemble_evidence")
            except NotFoundException:
                state = self.admin.dag_runs.get_dag_run(PROMOTE, run_id).state.value
                if state in ("success", "failed") or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{PROMOTE} run {run_id} is {state} without evidence: see the UI"
                    ) from None
                time.sleep(2)


def print_summary(demo: Demo, seconds: float) -> None:
    s, stack = demo.summary, demo.stack
    first, second = s["first"], s["second"]
    evidence = demo.evidence(first)
    metrics = evidence["metrics"]
    rejected_evidence = demo.evidence(second)
    lines = [
        "",
        "=" * 78,
        f"Tollgate demo finished in {seconds:.0f} s",
        demo.laps.line(),
        "=" * 78,
        "Dataset versions (DVC):",
        *[f"  {v}" for v in s["dataset_versions"]],
        f"Quarantined rows (kept with reasons): {s['quarantined_total']}",
        f"Training: {len(first['tries'])} tries ({', '.join(t.state.value for t in first['tries'])}); "
        f"preemptions {evidence['training']['preemptions']}, "
        f"resumed from {evidence['training']['resumed_from']}",
        f"Model: {first['registered']['model_name']} v{first['registered']['version']}, "
        f"signature {'verified' if evidence['signature']['ok'] else 'REFUSED'} "
        f"(key {evidence['signature']['signer_key_id']})",
        "Metrics on the fresh holdout (challenger vs champion):",
        *[f"  {k:<18} {v:.4f}" for k, v in metrics["challenger"].items()],
        f"  champion before: {metrics['champion'] or 'none (first model, held to absolute floors)'}",
        *[approval_line(r, tags) for r, tags in zip(s["approved"], s["approved_tags"], strict=True)],
        *_rollout_lines(demo),
        *([f"Watch after promotion ({WATCH}): {s['watch']}"] if s.get("watch") else []),
        f"Champion now: v{s['champion']}",
        f"Offline gate: v{second['registered']['version']} (degraded) REJECTED: "
        + "; ".join(r for g in rejected_evidence["gates"].values() for r in g["reasons"]),
        *_newest_mail(stack),
        "",
        stack.describe(),
    ]
    print("\n".join(lines))


def approval_line(trained: dict[str, Any], tags: dict[str, str]) -> str:
    from tollgate.evaluation.promotion import (
        TAG_DECIDED_AT,
        TAG_DECIDED_BY,
        TAG_DECISION,
        TAG_EVIDENCE_SHA256,
    )

    return (
        f"Approval of v{trained['registered']['version']}: {tags.get(TAG_DECISION)} by "
        f"{tags.get(TAG_DECIDED_BY)} at {tags.get(TAG_DECIDED_AT)} "
        f"(evidence sha256 {tags.get(TAG_EVIDENCE_SHA256, '')[:16]}…)"
    )


def _rollout_lines(demo: Demo) -> list[str]:
    """The good challenger's stage table, and why the slow one was rolled back."""
    s = demo.summary
    rollout = demo.evidence(s["good"]).get("rollout") or {}
    if not rollout.get("ran"):
        return [f"Shadow and canary: not run ({rollout.get('note', 'no rollout')})"]
    lines = [
        f"Shadow and canary of v{s['good']['registered']['version']} on replayed traffic:",
        rollout["table"],
    ]
    slow = demo.evidence(s["slow"]).get("rollout") or {}
    verdicts = ", ".join(f"{stage} {v or 'not run'}" for stage, v in (slow.get("verdicts") or {}).items())
    lines += [
        f"Canary report (MLflow artifact): {rollout.get('report')}",
        f"Slow challenger v{s['slow']['registered']['version']} ({verdicts}) ROLLED BACK and REJECTED:",
    ]
    for stage, record in (slow.get("records") or {}).items():
        if record and record["verdict"] == "FAIL":
            lines += [f"  {stage}: {reason}" for reason in record["reasons"]]
    return lines


def _newest_mail(stack: LocalStack) -> list[str]:
    """The newest message the approvers were sent, as the local SMTP server stored it."""
    from tollgate.platform.mailbox import describe, messages

    mail = messages(stack.mailbox)
    if not mail:
        return [f"Mail to the approvers: none in {stack.mailbox}"]
    text = describe(mail[-1])
    return [f"Newest of {len(mail)} mails to the approvers ({stack.mailbox}):",
            *[f"  | {line}" for line in text.splitlines()]]  # fmt: skip


def earlier_work(dataset_tags: list[str], run_counts: dict[str, int]) -> list[str]:
    """What an earlier run left in the state, in words (empty for an empty state)."""
    found = []
    if dataset_tags:
        found.append(f"{len(dataset_tags)} dataset versions ({', '.join(sorted(dataset_tags)[-3:])}, ...)")
    found += [f"{count} runs of {dag_id}" for dag_id, count in run_counts.items() if count]
    return found


def refusal(found: list[str], home: str) -> str:
    """Why the demo does not run on this state, and how to get an empty one."""
    return (
        f"make demo needs an empty state, and {home} holds the work of an earlier run: "
        + "; ".join(found)
        + ". Its summary would mix that work with this run's. The platform is up: look around in the UI "
        "(`make status`). To run the demo again from an empty state: `make clean-state && make demo` "
        "(clean-state stops the platform and deletes the state folder: databases, models, data, keys)."
    )


def dataset_tags(repo: str) -> list[str]:
    """Dataset version tags in the data repository ([] when it does not exist yet)."""
    import subprocess

    tags = subprocess.run(["git", "-C", repo, "tag", "--list", "data-*"], capture_output=True, text=True)
    return tags.stdout.split() if tags.returncode == 0 else []


def _state_of(stack: LocalStack, admin: AirflowClient, example: str = "ctr") -> list[str]:
    from tollgate.extensions import scoped

    counts = {}
    for dag_id in (INGEST, TRAIN, PROMOTE):
        try:
            counts[dag_id] = admin.dag_runs.get_dag_runs(dag_id, limit=1).total_entries or 0
        except NotFoundException:
            continue  # not parsed yet: no runs
    return earlier_work(dataset_tags(scoped(platform_setting(stack, "tollgate_data_repo"), example)), counts)


def main() -> int:
    started = time.monotonic()
    laps = Laps(started)
    stack = stack_for(os.environ.get("TOLLGATE_PROFILE") or "default")
    if isinstance(stack, DistributedStack):  # MLflow's account and the S3 endpoint for this process
        os.environ.update(stack.client_env())
    try:
        if stack.running_services():
            say(f"Reusing the local platform already running in {stack.home}")
        else:
            say("Starting the local platform (Airflow + MLflow)...")
            stack.up(announce=False)
    except ServiceError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    from tollgate import extensions

    example = extensions.configured()
    try:
        extensions.load(example)
    except ValueError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    say(f"Example: {example} (make demo EXAMPLE=<name>; env TOLLGATE_EXAMPLE)")
    laps.lap("platform up")
    demo = Demo(stack, example, laps)
    found = _state_of(stack, demo.admin, example)
    if found:
        print(f"ERROR: {refusal(found, str(stack.home))}", file=sys.stderr)
        return 2
    demo.run()
    print_summary(demo, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
