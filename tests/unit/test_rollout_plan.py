"""The rollout plan's settings, the triggerer's stop rule, the rollout gate and its evidence: pure parts."""

from __future__ import annotations

import json

import pytest

from tollgate.config import default_for
from tollgate.evaluation.rollout_plan import STAGES, RolloutPlan
from tollgate.evaluation.rollout_stages import rollout_evidence, rollout_gate, rollout_wanted, stage_table
from tollgate.evaluation.rollout_wait import DEADLINE, ENDED, READY, stage_outcome
from tollgate.serving.admin_client import counters

pytestmark = pytest.mark.unit


def test_the_local_default_is_small_and_production_gets_the_analysis_defaults():
    local = RolloutPlan.from_json(default_for("tollgate_rollout"))
    assert local.replay and local.analysis.min_challenger_samples == 30 and local.stage_deadline_s == 120
    production = RolloutPlan.from_json('{"replay": false, "required": true}')
    assert production.analysis.min_challenger_samples == 8000 and not production.replay
    assert [production.weight(s) for s in STAGES] == [0.0, 0.01, 0.05, 0.25]
    # requests to replay: enough for the smaller arm at the stage's weight, with the margin
    assert local.replay_requests("canary_1") == 3900 and local.replay_requests("shadow") == 260


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"replay": true, "speed": 3}', "unknown keys ['speed']"),
        ('{"analysis": {"min_samples": 3}}', "analysis: unknown keys ['min_samples']"),
        ('{"analysis": {"canary_weights": {"canary_1": 0.1}}}', "lacks stages ['canary_5', 'canary_25']"),
        ("[1]", "must be a JSON object"),
    ],
)
def test_a_wrong_plan_is_refused_naming_the_key(text, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        RolloutPlan.from_json(text)


STAGE = {
    "rollout_id": "r1", "mode": "canary", "weight_bp": 100, "baseline": {"challenger": 5, "champion": 50,
    "requests": 55, "log_rows": 55}, "need": {"challenger": 30, "champion": 30}, "labels_at": 100.0,
    "deadline": 200.0,
}  # fmt: skip
ROLLOUT = {"rollout_id": "r1", "mode": "canary", "weight_bp": 100}


def test_the_wait_fires_on_samples_flushed_and_matured_on_an_ended_rollout_or_at_the_deadline():
    enough = {"challenger": 35, "champion": 3000, "requests": 3100, "log_rows": 3100}
    assert stage_outcome(STAGE, enough, ROLLOUT, 150.0) == READY
    assert stage_outcome(STAGE, {**enough, "log_rows": 3000}, ROLLOUT, 150.0) is None  # log not flushed
    assert stage_outcome(STAGE, enough, ROLLOUT, 50.0) is None  # labels not matured
    assert stage_outcome(STAGE, {**enough, "challenger": 34}, ROLLOUT, 150.0) is None  # 29 new only
    assert stage_outcome(STAGE, {**enough, "challenger": 34}, ROLLOUT, 200.0) == DEADLINE
    for changed in ({"mode": "off"}, {"rollout_id": "r2"}, {"weight_bp": 500}):
        assert stage_outcome(STAGE, enough, {**ROLLOUT, **changed}, 150.0) == ENDED


def test_counters_read_from_the_prometheus_text():
    text = "\n".join([
        'tollgate_router_requests_total{variant="challenger",version="2",status="200"} 7.0',
        'tollgate_router_requests_total{variant="champion",version="1",status="200"} 90.0',
        'tollgate_router_requests_total{variant="champion",version="1",status="422"} 3.0',
        'tollgate_router_shadow_predictions_total{status="ok"} 11.0',
        'tollgate_router_shadow_predictions_total{status="error"} 2.0',
        "tollgate_router_prediction_log_rows_total 99.0",
    ])  # fmt: skip
    assert counters(text) == {
        "challenger": 7,
        "champion": 90,
        "requests": 100,
        "shadow_ok": 11,
        "log_rows": 99,
    }


def record(stage: str, verdict: str, reasons=()) -> dict:
    stats = [{"name": "p99_ratio", "estimate": 1.0, "low": 0.9, "high": 1.1, "n": 40, "p_value": 0.5}]
    return {"stage": stage, "verdict": verdict, "reasons": list(reasons), "statistics": stats, "sha256": "x"}


def test_the_gate_passes_only_when_every_stage_passed_or_an_approver_chose_continue():
    passed = {s: record(s, "PASS") for s in STAGES}
    assert rollout_gate(passed, {})["passed"]
    unsure = {**passed, "canary_5": record("canary_5", "INCONCLUSIVE", ["too few samples"])}
    assert rollout_gate(unsure, {"canary_5": "Continue"})["passed"]
    for choice in (None, "Extend", "Reject"):
        gate = rollout_gate(unsure, {"canary_5": choice})
        assert not gate["passed"] and "canary_5 INCONCLUSIVE (too few samples)" in gate["reasons"][0]
    skipped = {**passed, "canary_25": None}  # a stage marked by hand never ran: no verdict, no pass
    assert rollout_gate(skipped, {})["reasons"] == [
        "canary_25: no verdict (not run, skipped or marked by hand)"
    ]
    failed = {**passed, "canary_1": record("canary_1", "FAIL", ["p99_ratio: worse"])}
    assert rollout_gate(failed, {})["reasons"] == ["canary_1 FAIL: p99_ratio: worse"]
    assert rollout_gate(passed, {})["sha256"] != rollout_gate(unsure, {"canary_5": "Continue"})["sha256"]
    assert "| canary_1 | PASS | p99_ratio | 1 [0.9, 1.1] | 40 | 0.5 |" in stage_table(passed)


def test_stages_not_run_are_said_in_the_evidence_and_fail_the_gate_only_when_required():
    plan, required = RolloutPlan(), RolloutPlan(required=True)
    note = "not run: the router at http://x serves model 'a', not 'b'"
    assert rollout_evidence(note, None, {}, {}, plan)["gate"] == {"passed": True, "reasons": []}
    assert not rollout_evidence(note, None, {}, {}, required)["gate"]["passed"]
    first = "not run: no champion yet (the first model is held to the offline gate's bounds)"
    assert rollout_evidence(first, None, {}, {}, required)["gate"]["passed"]
    assert rollout_evidence("not run: an earlier gate failed", None, {}, {}, required) is None


def test_no_stages_without_a_passed_offline_gate_or_a_champion():
    plan = RolloutPlan(router_url="http://127.0.0.1:9")  # nothing listens there
    ok, good = {"ok": True}, {"passed": True, "champion_version": "1"}
    assert rollout_wanted({"ok": False}, good, "m", plan) == (False, "not run: an earlier gate failed")
    assert "no champion yet" in rollout_wanted(ok, {"passed": True}, "m", plan)[1]
    wanted, why = rollout_wanted(ok, good, "m", plan)
    assert not wanted and "unreachable" in why


def test_the_evidence_reads_verdicts_from_storage_and_refuses_a_foreign_record(tmp_path):
    """XComs can be patched over the REST API; the stage records the evidence uses are the ones the
    stage tasks wrote under the storage root, found by the rollout id of this challenger and run."""
    from tollgate.evaluation.rollout_stages import rollout_id_for, save_record, stored_rollout

    root, run_id = str(tmp_path), "manual__2024-03-01"
    challenger = {"model_name": "tollgate-ctr", "version": "4"}
    rollout_id = rollout_id_for("tollgate-ctr", "4", run_id)
    assert stored_rollout(root, challenger, run_id, STAGES) == (None, dict.fromkeys(STAGES))

    save_record(root, rollout_id, "rollout", {"rollout_id": rollout_id, "version": "4"})
    save_record(
        root, rollout_id, "shadow", {"stage": "shadow", "rollout_id": rollout_id, "verdict": "INCONCLUSIVE"}
    )
    save_record(
        root, rollout_id, "shadow.extend", {"stage": "shadow", "rollout_id": rollout_id, "verdict": "PASS"}
    )
    save_record(
        root,
        rollout_id,
        "canary_1",
        {"stage": "canary_1", "rollout_id": rollout_id, "verdict": "FAIL", "reasons": ["p99 ratio 2.1"]},
    )
    rollout, records = stored_rollout(root, challenger, run_id, STAGES)
    assert rollout["version"] == "4"
    assert records["shadow"]["verdict"] == "PASS"  # the approvers' Extend decides, not the first look
    assert records["canary_1"]["verdict"] == "FAIL" and records["canary_5"] is None
    gate = rollout_gate(records, dict.fromkeys(STAGES))
    assert not gate["passed"] and "canary_1 FAIL: p99 ratio 2.1" in gate["reasons"]

    # a re-run stage cannot replace its verdict: the first record stands
    luckier = {"stage": "canary_1", "rollout_id": rollout_id, "verdict": "PASS", "reasons": []}
    assert not save_record(root, rollout_id, "canary_1", luckier)
    assert stored_rollout(root, challenger, run_id, STAGES)[1]["canary_1"]["verdict"] == "FAIL"

    # another rollout's PASS copied over this one's FAIL (by hand, in storage) is refused, not used
    other = rollout_id_for("tollgate-ctr", "3", run_id)
    forged = {"stage": "canary_1", "rollout_id": other, "verdict": "PASS"}
    (tmp_path / "rollouts" / rollout_id / "canary_1.json").write_text(json.dumps(forged))
    with pytest.raises(RuntimeError, match="refusing it"):
        stored_rollout(root, challenger, run_id, STAGES)
    # a different run of the same version has its own rollout: nothing of this one leaks into it
    assert stored_rollout(root, challenger, "manual__2024-03-02", STAGES)[0] is None


@pytest.mark.parametrize("example", ["ctr", "digits"])
def test_the_local_replay_adds_rows_newer_than_the_holdout_when_the_example_has_them(monkeypatch, example):
    """Beside the holdout, as many rows of the generator's next day (new users) for the click-through
    example; an example without ``traffic_after`` (digits) replays its holdout alone; production nothing."""
    import pandas as pd

    from tollgate import extensions, runtime
    from tollgate.data.generator import N_USERS
    from tollgate.evaluation import scoring
    from tollgate.evaluation.rollout_stages import replay_frame

    dataset = extensions.load(example).dataset
    ts = dataset.schema.timestamp
    holdout = dataset.generate(pd.Timestamp("2026-03-02").date(), rows=300, seed=7).tail(60)
    holdout = holdout.reset_index(drop=True)
    monkeypatch.setattr(scoring, "holdout_frame", lambda *args: holdout)
    monkeypatch.setattr(runtime, "setting", lambda name: "0.2")
    rollout = {"example": example, "dataset": {"repo": "r", "rev": "v", "path": "p"}}
    rows, label = replay_frame(RolloutPlan(replay=True), rollout)
    assert label == dataset.schema.label and rows.iloc[: len(holdout)].equals(holdout)
    newer = rows.iloc[len(holdout) :]
    if example == "digits":
        assert newer.empty
    else:
        assert len(newer) == len(holdout) and newer[ts].min() >= pd.Timestamp("2026-03-03", tz="UTC")
        assert 0.3 < (newer["user_id"] > N_USERS).mean() < 0.7 and not (holdout["user_id"] > N_USERS).any()
    assert replay_frame(RolloutPlan(replay=False), rollout) == (None, None)


@pytest.mark.parametrize(
    ("stage", "short"), [("canary_1", 1), ("canary_5", 1), ("canary_5", 7), ("canary_25", 30)]
)
def test_a_top_up_round_covers_an_arm_s_shortfall_almost_surely(stage, short):
    """Sending short / share requests falls short half the time (a flaky stage that ends INCONCLUSIVE);
    the top-up round is sized so the smaller arm gets its missing samples with 99.9 % probability."""
    from scipy.stats import binom

    plan = RolloutPlan.from_json(default_for("tollgate_rollout"))
    share = plan.weight(stage)
    n = plan.top_up_requests(stage, {"challenger": short})
    assert binom.sf(short - 1, n, share) >= 0.999
    assert binom.sf(short - 1, n // 2, share) < 0.999  # and not wastefully more than that
    both = plan.top_up_requests(stage, {"challenger": short, "champion": 500})
    assert binom.sf(499, both, 1 - share) >= 0.999 and both >= n
