"""The watch after promotion: the new champion against what ``previous`` showed over its last hours.

A version that passed shadow and canary can still go wrong once it takes all the traffic. The
``watch_champion`` DAG waits for the configured period after a promotion, then compares, from the
prediction log, the requests the new champion served since its promotion with those the previous
champion served over its last ``baseline_s`` as champion: error rate (mSPRT + hard limit), latency shift
(Mann-Whitney / Hodges-Lehmann) and the p99 ratio (bootstrap) — the canary's own checks
(``canary_verdict.compare_errors_and_latency``), at the watch's own alpha. A FAIL rolls back to the
previous version automatically (re-verified, a signed ``automatic_rollback`` attestation, the reasons on
both versions); too few requests on either side is INCONCLUSIVE and changes nothing.

What was promoted, from what and when is read from the version's signed ``promoted`` attestation, never
from the asset event that started the watch (anyone allowed to post asset events could forge one).

Settings: Variable ``tollgate_watch`` (JSON; keys of ``WatchPlan``, ``"analysis"`` keys of
``CanarySettings``). Its embedded default is the local platform's (a short watch, replayed traffic).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tollgate.evaluation import canary_schema as col
from tollgate.evaluation.canary_settings import CanarySettings, plan_fields
from tollgate.evaluation.rollout_plan import default_router_url

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from tollgate.evaluation.decisions import Keys

WATCH = "watch"
TAG_WATCH = "tollgate.watch.verdict"


@dataclass(frozen=True)
class WatchPlan:
    # How long after the promotion the new champion is watched before the comparison.
    watch_s: float = 6 * 3600.0
    # How far back the previous champion's requests count as its baseline.
    baseline_s: float = 24 * 3600.0
    # Requests needed on each side; fewer is INCONCLUSIVE (nothing is rolled back on no evidence).
    min_samples: int = 2000
    # The false-rollback rate of one watch (Holm across its checks).
    alpha: float = 0.01
    # Local platform: replay rows of the champion's dataset as traffic during the watch, through this
    # router (default: TOLLGATE_ROUTER_URL, as the rollout's). Production: off (real traffic).
    router_url: str = field(default_factory=default_router_url)
    replay: bool = False
    replay_requests: int = 0
    replay_rate: float = 200.0
    analysis: CanarySettings = field(default_factory=CanarySettings)

    @classmethod
    def from_json(cls, text: str | None) -> WatchPlan:
        return replace(cls(), **plan_fields(cls, text, "tollgate_watch", '{"watch_s": 21600}'))

    def settings(self) -> CanarySettings:
        """The analysis settings with the whole alpha on the watch's one look."""
        return replace(self.analysis, rollout_alpha=self.alpha, stage_weights={WATCH: 1.0})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def watch_id(model_name: str, version: str, promoted_at: float) -> str:
    """One watch per promotion: a version promoted again later is watched afresh, not judged by the
    verdict stored for its earlier promotion."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{model_name}-v{version}-at{int(promoted_at)}")[:120]


def promotion_facts(client: MlflowClient, name: str, version: str, keys: Keys) -> dict[str, Any]:
    """(previous version, promoted at) from the version's verified ``promoted`` attestation.

    Raises DecisionRefused when the version does not verify or its attestation is missing or forged."""
    from tollgate.evaluation.decisions import DecisionRefused, check_rollback_target
    from tollgate.registry import attestation

    verified = check_rollback_target(client, name, version, keys)  # verifies, approved and promoted
    check = attestation.check_version(
        verified.tags,
        keys.decision_trusted,
        decision=attestation.PROMOTED,
        model_name=name,
        version=str(verified.version),
        signature_sha256=verified.signature_sha256,
    )
    if not check.ok:
        raise DecisionRefused(f"Refusing to watch {name} v{version}: " + "; ".join(check.problems))
    predicate = check.predicate
    previous = (predicate.get("context") or {}).get("previous")
    dataset = ((verified.provenance or {}).get("predicate") or {}).get("dataset") or {}
    return {
        "model_name": name,
        "version": str(verified.version),
        "previous": str(previous) if previous else None,
        "promoted_at": datetime.fromisoformat(predicate["decided_at"]).timestamp(),
        "dataset": {k: dataset.get(k) for k in ("repo", "rev", "path", "example")},
    }


def select_rows(
    log: pd.DataFrame, facts: dict[str, Any], until: float, baseline_s: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(requests the new champion served since its promotion, those ``previous`` served as champion
    over ``baseline_s`` before it), from a log in ``canary_schema`` names."""
    import pandas as pd

    at = pd.Timestamp(facts["promoted_at"], unit="s", tz="UTC")
    end = pd.Timestamp(until, unit="s", tz="UTC")
    start = at - pd.Timedelta(seconds=baseline_s)
    champion = log[log[col.ARM] == col.CHAMPION]
    ts = champion[col.TIMESTAMP]
    new = champion[(champion[col.SERVED_VERSION] == facts["version"]) & (ts >= at) & (ts <= end)]
    old = champion[(champion[col.SERVED_VERSION] == facts["previous"]) & (ts >= start) & (ts < at)]
    return new.reset_index(drop=True), old.reset_index(drop=True)


def analyse_watch(new: pd.DataFrame, baseline: pd.DataFrame, plan: WatchPlan) -> dict[str, Any]:
    """The watch's verdict record (sealed): PASS, FAIL (roll back) or INCONCLUSIVE (too few requests)."""
    from tollgate.evaluation.canary_verdict import compare_errors_and_latency, decide

    s = plan.settings()
    reasons: list[str] = []
    invalid = len(new) < plan.min_samples or len(baseline) < plan.min_samples
    if invalid:
        reasons.append(
            f"too few requests: new champion {len(new)}, previous champion {len(baseline)} "
            f"(min {plan.min_samples} each)"
        )
    results, more, hard_fail, errors = compare_errors_and_latency(new, baseline, s)
    extra = {"samples": {"new": len(new), "previous": len(baseline)}, "errors": errors}
    return decide(WATCH, WATCH, results, reasons + more, hard_fail, invalid, False, s, extra)


def _record_uri(storage_root: str, wid: str) -> str:
    from tollgate import storage

    return storage.join(storage_root, "watches", f"{wid}.json")


def save_record(storage_root: str, wid: str, record: dict[str, Any]) -> dict[str, Any]:
    """Store the watch's verdict once and return the stored one: a cleared judge task cannot draw again."""
    from tollgate import storage

    uri = _record_uri(storage_root, wid)
    if not storage.put_if_absent(uri, json.dumps(record, sort_keys=True, default=str).encode()):
        return json.loads(storage.read_bytes(uri))
    return record


# ---- inside the watch_champion tasks ---------------------------------------------------------------
class NotChampionAnyMore(RuntimeError):
    """The watched version lost ``champion`` meanwhile (promoted over, rolled back): nothing to do."""


def load_plan() -> WatchPlan:
    from tollgate.runtime import setting

    return WatchPlan.from_json(setting("tollgate_watch"))


def watched(event_extras: list[dict[str, Any]], keys: Keys) -> dict[str, Any]:
    """The attested facts of the promotion the newest champion event names (the event only names it)."""
    from tollgate.evaluation.decisions import DecisionRefused
    from tollgate.registry.register import mlflow_client
    from tollgate.runtime import mlflow_uri

    if not event_extras:
        raise DecisionRefused("no champion event: watch_champion runs when a promotion publishes one")
    newest = event_extras[-1]
    name, version = newest.get("model_name"), newest.get("version")
    if not name or not version:
        raise DecisionRefused(f"the champion event names no model_name and version: {newest}")
    facts = promotion_facts(mlflow_client(mlflow_uri()), str(name), str(version), keys)
    return {**facts, "watch_id": watch_id(facts["model_name"], facts["version"], facts["promoted_at"])}


def is_champion(facts: dict[str, Any]) -> bool:
    from tollgate.evaluation.promotion import alias_version
    from tollgate.registry.names import CHAMPION
    from tollgate.registry.register import mlflow_client
    from tollgate.runtime import mlflow_uri

    return alias_version(mlflow_client(mlflow_uri()), facts["model_name"], CHAMPION) == facts["version"]


def until_of(facts: dict[str, Any], plan: WatchPlan) -> float:
    return float(facts["promoted_at"]) + plan.watch_s


def replay_traffic(facts: dict[str, Any], plan: WatchPlan, timeout_s: float = 60.0) -> dict[str, Any]:
    """Local platform: once the router serves the new champion, replay its dataset's holdout rows."""
    import time

    from tollgate import extensions
    from tollgate.evaluation.scoring import holdout_frame
    from tollgate.runtime import setting
    from tollgate.serving.admin_client import RouterAdmin
    from tollgate.serving.replay import replay

    router = RouterAdmin(plan.router_url, timeout=10)
    deadline = time.monotonic() + timeout_s
    while ((router.status().get("variants") or {}).get("champion") or {}).get("version") != facts["version"]:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the router at {router.url} does not serve v{facts['version']} after {timeout_s:.0f} s"
            )
        time.sleep(1)
    dataset = facts["dataset"]
    example = extensions.load(dataset.get("example") or extensions.configured())
    repo, rev, path = dataset["repo"], dataset["rev"], dataset["path"]
    frame = holdout_frame(repo, rev, path, float(setting("tollgate_holdout_fraction")), example)
    n = plan.replay_requests
    result = replay(
        router.url, frame.sample(n=n, replace=len(frame) < n, random_state=0),
        storage_root=setting("tollgate_storage_root"), rate=plan.replay_rate,
        max_requests=plan.replay_requests, max_seconds=max(plan.watch_s, 1.0),
    )  # fmt: skip
    return {"replay_id": result.replay_id, "sent": result.sent, "ok": result.ok}


def judge_watch(facts: dict[str, Any], plan: WatchPlan) -> dict[str, Any]:
    """Analyse the watch window, store the verdict once (the stored one stands) and tag it on the version."""
    import time

    from tollgate.evaluation.canary_log import from_router_log
    from tollgate.registry.register import mlflow_client
    from tollgate.runtime import mlflow_uri, setting
    from tollgate.serving.predlog import read_log

    root = setting("tollgate_storage_root")
    t0 = time.monotonic()
    log = from_router_log(read_log(root))
    new, baseline = select_rows(log, facts, until_of(facts, plan), plan.baseline_s)
    record = analyse_watch(new, baseline, plan)
    record = {**record, "watch_id": facts["watch_id"], "model_name": facts["model_name"],
              "version": facts["version"], "previous": facts["previous"],
              "analysis_seconds": round(time.monotonic() - t0, 2)}  # fmt: skip
    record = save_record(root, facts["watch_id"], record)
    summary = (
        f"{record['verdict']}: " + "; ".join(record["reasons"]) if record["reasons"] else record["verdict"]
    )
    mlflow_client(mlflow_uri()).set_model_version_tag(
        facts["model_name"], facts["version"], TAG_WATCH, summary[:5000]
    )
    return record


def roll_back_watched(
    facts: dict[str, Any], run_id: str, keys: Keys, context: dict[str, Any]
) -> dict[str, Any]:
    """Roll back to the previous champion on the watch's stored FAIL, through the attested rollback path."""
    from tollgate import storage
    from tollgate.evaluation.decisions import DecisionRefused, rollback_attested
    from tollgate.evaluation.promotion import TAG_ROLLBACK, alias_version
    from tollgate.registry.names import CHAMPION
    from tollgate.registry.register import mlflow_client
    from tollgate.runtime import mlflow_uri, setting

    uri = _record_uri(setting("tollgate_storage_root"), facts["watch_id"])
    record = json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None
    if not record or record.get("verdict") != "FAIL":
        raise DecisionRefused(
            f"Refusing to roll back: the stored watch verdict of {facts['model_name']} v{facts['version']} "
            f"is {(record or {}).get('verdict', 'missing')}, not FAIL"
        )
    client = mlflow_client(mlflow_uri())
    name = facts["model_name"]
    current = alias_version(client, name, CHAMPION)
    earlier = json.loads(client.get_model_version(name, facts["previous"]).tags.get(TAG_ROLLBACK) or "{}")
    finishing = current == facts["previous"] and earlier.get("request_id") == run_id  # a retry part-way
    if current != facts["version"] and not finishing:
        raise NotChampionAnyMore(
            f"v{facts['version']} is no longer the champion (now v{current}): nothing to roll back"
        )
    reason = (
        f"automatic rollback by watch_champion: v{facts['version']} was worse than v{facts['previous']} "
        "after its promotion: " + "; ".join(record["reasons"])
    )
    done = rollback_attested(
        client,
        name,
        facts["previous"],
        "tollgate watch_champion",
        reason,
        run_id,
        keys,
        context,
        automatic=True,
    )
    return done.__dict__
