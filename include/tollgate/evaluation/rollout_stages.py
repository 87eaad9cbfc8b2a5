"""The work of the shadow and canary stages, as plain functions the DAG's tasks call.

A rollout has one id (sticky assignment of users to arms across its stages). Each stage: ``start_stage``
sets the router (mode, weight, lease), notes the counters and, on the local platform, replays traffic;
the deferrable wait (``rollout_wait``) ends when the samples are there; ``analyse_stage`` reads the
stage's rows from the prediction log and judges them (``canary_verdict``). A FAIL ends the rollout at
once (``rollback``: weight 0, challenger unloaded); ``end_rollout`` (the DAG's teardown) leaves the router
with the champion alone whatever happened.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from tollgate.evaluation.rollout_plan import CONTINUE, SHADOW, STAGES, RolloutPlan
from tollgate.serving.admin_client import RouterAdmin

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


def progress_of(baseline: dict[str, float], now: dict[str, float]) -> dict[str, float]:
    return {k: now.get(k, 0.0) - baseline.get(k, 0.0) for k in now}


def rollout_id_for(model_name: str, version: str, run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{model_name}-v{version}-{run_id}")[:120]


def start_stage(
    plan: RolloutPlan,
    stage: str,
    rollout_id: str,
    version: str,
    owner: str,
    replay_rows: Any = None,
    label_column: str | None = None,
    storage_root: str | None = None,
    factor: float = 1.0,
    admin: RouterAdmin | None = None,
) -> dict[str, Any]:
    """Route the stage's traffic (shadow mirror or canary weight) and, locally, send replayed rows."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
    admin = admin or RouterAdmin(plan.router_url)
    mode = "shadow" if stage == SHADOW else "canary"
    deadline_s = plan.stage_deadline_s * factor
    record = admin.set_rollout(
        mode, version, plan.weight(stage), rollout_id, deadline_s + plan.lease_margin_s, owner
    )
    since = time.time()
    baseline = admin.counters()
    labels_at = since
    sent: dict[str, Any] = {}
    if plan.replay and replay_rows is not None:
        from tollgate.serving.replay import replay

        n = plan.replay_requests(stage, factor)
        need = plan.needed(stage, factor)
        sent = {"replay_ids": [], "sent": 0, "ok": 0}
        # Arms are drawn per request: a round may fall short of the smaller arm's count by chance, so
        # send more rounds, each sized to cover the shortfall (99.9 %), until the router's counters show
        # the stage's samples or the stage's deadline comes (then the wait judges what there is).
        ends = since + deadline_s
        for attempt in range(8):
            rows = replay_rows.sample(
                n=n, replace=len(replay_rows) < n, random_state=attempt + 10 * len(stage)
            )
            result = replay(
                plan.router_url, rows, storage_root=storage_root or "", rate=plan.replay_rate, max_requests=n,
                max_seconds=max(1.0, min(ends - time.time(), 3600.0)), label_column=label_column,
                label_delay_s=plan.label_delay_s,
            )  # fmt: skip
            sent["replay_ids"].append(result.replay_id)
            sent["sent"] += result.sent
            sent["ok"] += result.ok
            got = progress_of(baseline, admin.counters())
            short = {k: v - got.get(k, 0.0) for k, v in need.items() if got.get(k, 0.0) < v}
            if not short or stage == SHADOW or time.time() >= ends:  # shadow pairs arrive late (async)
                break
            n = plan.top_up_requests(stage, short)
        labels_at = time.time() + plan.label_delay_s
    return {
        "stage": stage,
        "rollout_id": rollout_id,
        "mode": mode,
        "weight_bp": int(record["weight_bp"]),
        "version": version,
        "router_url": plan.router_url,
        "since": since,
        "baseline": baseline,
        "need": plan.needed(stage, factor),
        "labels_at": labels_at,
        "deadline": since + deadline_s,
        "poll_s": plan.poll_s,
        "replayed": sent,
    }


def _ended_record(stage: str, wait: dict[str, Any]) -> dict[str, Any]:
    from tollgate.evaluation.canary_verdict import seal

    rollout = wait.get("rollout") or {}
    reason = rollout.get("aborted_reason") or f"the rollout was changed under the stage: {rollout}"
    reasons = [f"rollout ended by the router: {reason}"]
    return seal(
        {"stage": stage, "kind": "ended", "verdict": FAIL, "reasons": reasons,
         "statistics": [], "progress": wait.get("progress")}
    )  # fmt: skip


def analyse_stage(
    plan: RolloutPlan,
    started: dict[str, Any],
    wait: dict[str, Any],
    task_type: Any,
    storage_root: str,
    admin: RouterAdmin | None = None,
) -> dict[str, Any]:
    """The stage's verdict record (sealed, every statistic with its interval and n); renews the lease."""
    from tollgate.evaluation import canary_schema as col
    from tollgate.evaluation.canary_log import load_for_analysis
    from tollgate.evaluation.canary_verdict import analyse_canary, analyse_shadow
    from tollgate.evaluation.rollout_wait import ENDED, READY

    stage = started["stage"]
    if wait["outcome"] == ENDED:
        return _ended_record(stage, wait)
    t0 = time.monotonic()
    log, labels = load_for_analysis(storage_root, started["rollout_id"], time.time(), since=started["since"])
    if wait["outcome"] == READY and log.empty:
        raise RuntimeError(
            f"the router counted {wait.get('progress')} for stage {stage}, but the prediction log under "
            f"{storage_root} holds no row of rollout {started['rollout_id']}: the router and Airflow must "
            "share one storage root (router env TOLLGATE_STORAGE_ROOT = Variable tollgate_storage_root)"
        )
    if stage == SHADOW:
        record = analyse_shadow(log, labels, task_type, stage, plan.analysis)
    else:
        version = started["version"]
        challenger = (log[col.ARM] == col.CHALLENGER) & (log[col.SERVED_VERSION] == version)
        record = analyse_canary(log[challenger | (log[col.ARM] == col.CHAMPION)], stage, plan.analysis)
    record = {**record, "wait": wait["outcome"], "analysis_seconds": round(time.monotonic() - t0, 2)}
    if record["verdict"] != FAIL:
        admin = admin or RouterAdmin(plan.router_url)
        admin.renew(started["rollout_id"], plan.stage_deadline_s + plan.lease_margin_s)
    return record


def rollback(plan: RolloutPlan, record: dict[str, Any], admin: RouterAdmin | None = None) -> dict[str, Any]:
    """A FAIL: canary weight 0 and the challenger unloaded now, with the stage's reasons."""
    admin = admin or RouterAdmin(plan.router_url)
    reason = f"{record['stage']} FAIL: " + "; ".join(record["reasons"])
    return admin.abort(reason[:1000])


def end_rollout(plan: RolloutPlan, rollout_id: str, admin: RouterAdmin | None = None) -> dict[str, Any]:
    """Teardown: the router serves the champion alone afterwards (checked, not assumed)."""
    admin = admin or RouterAdmin(plan.router_url)
    status = admin.status()
    rollout = status["rollout"]
    if rollout.get("mode") != "off" and rollout.get("rollout_id") == rollout_id:
        admin.abort(f"rollout {rollout_id} ended by its DAG run's teardown")
    elif rollout.get("mode") != "off":
        return {"ended": False, "note": f"another rollout {rollout.get('rollout_id')} runs: left alone"}
    for _ in range(40):
        status = admin.status()
        if status["variants"]["challenger"] is None and status["rollout"]["mode"] == "off":
            return {"ended": True, "rollout": status["rollout"]}
        time.sleep(0.25)
    raise RuntimeError(f"the router still serves a challenger after the teardown: {status['rollout']}")


def rollout_gate(records: dict[str, dict[str, Any] | None], choices: dict[str, str | None]) -> dict[str, Any]:
    """The rollout's gate for the evidence: passed only when every stage PASSed, or was INCONCLUSIVE and
    an approver chose Continue. A stage without a verdict (skipped, marked by hand) fails the gate."""
    reasons: list[str] = []
    for stage in STAGES:
        record = records.get(stage)
        if record is None:
            reasons.append(f"{stage}: no verdict (not run, skipped or marked by hand)")
            continue
        verdict = record["verdict"]
        if verdict == FAIL:
            reasons.append(f"{stage} FAIL: " + "; ".join(record["reasons"]))
        elif verdict == INCONCLUSIVE and choices.get(stage) != CONTINUE:
            why = "; ".join(record["reasons"])
            reasons.append(
                f"{stage} INCONCLUSIVE ({why}) and approvers chose {choices.get(stage) or 'nothing'}"
            )
    summary = {s: (records.get(s) or {}).get("verdict") for s in STAGES}
    body = json.dumps({"records": records, "choices": choices}, sort_keys=True, default=str)
    return {
        "passed": not reasons,
        "reasons": reasons,
        "verdicts": summary,
        "choices": choices,
        "sha256": hashlib.sha256(body.encode()).hexdigest(),
    }


def stage_table(records: dict[str, dict[str, Any] | None]) -> str:
    """Markdown: each stage's verdict and every statistic with its 95 % interval and n."""
    lines = [
        "| stage | verdict | statistic | estimate [95 % interval] | n | p |",
        "|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        record = records.get(stage)
        if record is None:
            lines.append(f"| {stage} | not run | | | | |")
            continue
        stats = record.get("statistics") or []
        if not stats:
            lines.append(f"| {stage} | {record['verdict']} | {'; '.join(record['reasons'])[:120]} | | | |")
        for s in stats:
            p = "" if s.get("p_value") is None else f"{s['p_value']:.3g}"
            lines.append(
                f"| {stage} | {record['verdict']} | {s['name']} | {s['estimate']:.4g} "
                f"[{s['low']:.4g}, {s['high']:.4g}] | {s['n']} | {p} |"
            )
    return "\n".join(lines)


def load_plan() -> RolloutPlan:
    """The plan from the Variable ``tollgate_rollout`` (inside a task only)."""
    from tollgate.runtime import setting

    return RolloutPlan.from_json(setting("tollgate_rollout"))


def replay_frame(plan: RolloutPlan, rollout: dict[str, Any]) -> tuple[Any, str | None]:
    """Rows to replay on the local platform and the label column; (None, None) when the plan replays
    nothing (production: real traffic).

    The rows: the challenger dataset's holdout and as many rows newer than it, when the example's simulated
    upstream offers them (``dataset.traffic_after(last_day, rows, seed)``, optional): live traffic is always
    newer than the data a model was judged on offline, and the generator's drift there is what the shadow
    stage's quality checks on delayed labels must face (a model miscalibrated only there passes offline)."""
    if not plan.replay:
        return None, None
    import pandas as pd

    from tollgate import extensions
    from tollgate.data.generator import DEFAULT_SEED
    from tollgate.evaluation.scoring import holdout_frame
    from tollgate.runtime import setting

    example = extensions.load(rollout["example"])
    schema = example.dataset.schema
    data = rollout["dataset"]
    frame = holdout_frame(
        data["repo"], data["rev"], data["path"], float(setting("tollgate_holdout_fraction")), example
    )
    newer = getattr(example.dataset, "traffic_after", None)
    if newer is not None and len(frame):
        last_day = pd.Timestamp(frame[schema.timestamp].max()).date()
        fresh = newer(last_day, len(frame), DEFAULT_SEED)
        frame = pd.concat([frame, fresh], ignore_index=True, join="inner")  # the columns both have
    return frame, schema.label


def begin(
    challenger: dict[str, Any], signature: dict[str, Any], offline: dict[str, Any], run_id: str, dag_id: str
) -> dict[str, Any]:
    """The rollout's identity and what its stages need; refuses when the router serves no champion."""
    from tollgate import extensions
    from tollgate.runtime import setting

    plan = load_plan()
    status = RouterAdmin(plan.router_url).status()
    if not status.get("ready"):
        raise RuntimeError(
            f"the router at {plan.router_url} serves no champion ({status.get('reason')}): "
            "a shadow or canary stage needs one; start it (make up) and check /status"
        )
    dataset = signature["provenance"]["predicate"]["dataset"]
    example = dataset.get("example") or extensions.configured()
    name, version = challenger["model_name"], str(challenger["version"])
    rollout = {
        "rollout_id": rollout_id_for(name, version, run_id),
        "model_name": name,
        "version": version,
        "champion_version": offline.get("champion_version"),
        "example": example,
        "task": str(extensions.load(example).gate.task),
        "dataset": {"repo": dataset["repo"], "rev": dataset["rev"], "path": dataset["path"]},
        "storage_root": setting("tollgate_storage_root"),
        "owner": f"airflow {dag_id}/{run_id}",
        "router_url": plan.router_url,
    }
    save_record(rollout["storage_root"], rollout["rollout_id"], "rollout", rollout)
    return rollout


def rollout_wanted(
    signature: dict[str, Any], offline: dict[str, Any], model_name: str, plan: RolloutPlan
) -> tuple[bool, str]:
    """Stages run for a signed challenger that passed the offline gate and has a champion to face, when
    the router serves its model. Without such a router the stages are skipped with the reason in the
    evidence, or, when the plan requires them (``required``), the rollout gate fails."""
    if not signature.get("ok") or not offline.get("passed"):
        return False, "not run: an earlier gate failed"
    if not offline.get("champion_version"):
        return False, "not run: no champion yet (the first model is held to the offline gate's bounds)"
    try:
        served = RouterAdmin(plan.router_url, timeout=10).status().get("model_name")
    except Exception as err:  # any failure to reach the router is reported the same way
        served, why = None, f"router {plan.router_url} unreachable: {err}"
    else:
        why = f"the router at {plan.router_url} serves model {served!r}, not {model_name!r}"
    if served != model_name:
        return False, f"not run: {why}"
    return True, "run"


def rollout_evidence(
    entry: str | None,
    rollout: dict[str, Any] | None,
    records: dict[str, dict | None],
    choices: dict[str, str | None],
    plan: RolloutPlan,
) -> dict[str, Any] | None:
    """The rollout's part of the evidence: its gate, each stage's record, the table, one sha256.

    ``entry`` is why the stages ran or not (``enter_rollout``'s log line); None when an earlier gate
    failed (that gate already rejects)."""
    if rollout is None:
        if entry is None or "earlier gate failed" in entry:
            return None
        passed = not plan.required or "no champion yet" in entry
        reasons = [] if passed else [f"shadow and canary are required and {entry}"]
        return {"ran": False, "note": entry, "gate": {"passed": passed, "reasons": reasons}}
    gate = rollout_gate(records, choices)
    return {
        "ran": True,
        "rollout_id": rollout["rollout_id"],
        "gate": {"passed": gate["passed"], "reasons": gate["reasons"]},
        "verdicts": gate["verdicts"],
        "choices": choices,
        "records": records,
        "table": stage_table(records),
        "sha256": gate["sha256"],
    }


TAG_ROLLOUT_SHA256 = "tollgate.rollout.evidence_sha256"
TAG_ROLLOUT_VERDICTS = "tollgate.rollout.verdicts"


def record_on_version(challenger: dict[str, Any], rollout: dict[str, Any] | None) -> None:
    """The stage verdicts and the sha256 of their full evidence, on the version's tags (when they ran)."""
    if not rollout or not rollout.get("ran"):
        return
    from tollgate.registry.register import mlflow_client
    from tollgate.runtime import mlflow_uri

    client = mlflow_client(mlflow_uri())
    name, version = challenger["model_name"], str(challenger["version"])
    verdicts = ", ".join(f"{s}={v or 'not run'}" for s, v in rollout["verdicts"].items())
    client.set_model_version_tag(name, version, TAG_ROLLOUT_VERDICTS, verdicts)
    client.set_model_version_tag(name, version, TAG_ROLLOUT_SHA256, rollout["sha256"])


# ---- the rollout's records in object storage, not in XComs ------------------------------------------
# XComs can be created and patched over Airflow's REST API by any user who can edit a run, so the
# evidence never takes a verdict from one: the stage task writes its record under the storage root (which
# Airflow users cannot write), once, and the evidence reads it back by the rollout id it computes itself.
def _record_uri(storage_root: str, rollout_id: str, name: str) -> str:
    from tollgate import storage

    return storage.join(storage_root, "rollouts", rollout_id, f"{name}.json")


def save_record(storage_root: str, rollout_id: str, name: str, record: dict[str, Any]) -> bool:
    """Store the record of ``name`` (``enter_rollout``, ``rollout``, a stage, ``<stage>.extend``) once.

    The first record stays: a stage task cleared and re-run cannot replace a FAIL or INCONCLUSIVE with a
    luckier PASS (it resumes with the stored record instead; Extend is the approvers' way to look again).
    Returns whether this call stored it."""
    import json

    from tollgate import storage

    data = json.dumps(record, sort_keys=True, default=str).encode()
    return storage.put_if_absent(_record_uri(storage_root, rollout_id, name), data)


def load_record(storage_root: str, rollout_id: str, name: str) -> dict[str, Any] | None:
    import json

    from tollgate import storage

    uri = _record_uri(storage_root, rollout_id, name)
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None


def stored_rollout(
    storage_root: str, challenger: dict[str, Any], run_id: str, stages: tuple[str, ...]
) -> tuple[dict[str, Any] | None, dict[str, dict | None]]:
    """(the rollout begun for this challenger in this run, each stage's last record), from storage."""
    root = storage_root
    rollout_id = rollout_id_for(challenger["model_name"], str(challenger["version"]), run_id)
    rollout = load_record(root, rollout_id, "rollout")
    records: dict[str, dict | None] = {}
    for stage in stages:
        record = load_record(root, rollout_id, f"{stage}.extend") or load_record(root, rollout_id, stage)
        if record is not None and (record.get("stage"), record.get("rollout_id")) != (stage, rollout_id):
            raise RuntimeError(f"stored record of stage {stage} names {record.get('stage')!r} of rollout "
                               f"{record.get('rollout_id')!r}, not {rollout_id!r}: refusing it")  # fmt: skip
        records[stage] = record
    return rollout, records
