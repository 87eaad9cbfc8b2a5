"""The spot report: counts, lost work, checkpoint overhead and cost against on-demand."""

from __future__ import annotations

import pytest

from tollgate.config import INSTANCE_PRICES_USD_PER_HOUR, default_for
from tollgate.launch.classify import Classification, Outcome
from tollgate.launch.ledger import AttemptLedger
from tollgate.launch.report import build_report, format_report, steps_redone_from_ledger

pytestmark = pytest.mark.unit

PRICES = {"test.large": {"spot": 0.1, "on_demand": 0.3}}


def _ledger() -> AttemptLedger:
    ledger = AttemptLedger("run-1")
    first = ledger.begin(try_number=1, series=1, backend="local", capacity="spot", instance_type="test.large")
    first.finish(Classification(Outcome.PREEMPTED, "exit 75", 75), resumed_from_step=0, last_step=25)
    first.duration_seconds = 100.0
    second = ledger.begin(
        try_number=2, series=1, backend="local", capacity="on-demand", instance_type="test.large"
    )
    second.finish(Classification(Outcome.SUCCEEDED, "exit 0", 0), resumed_from_step=20, last_step=150)
    second.duration_seconds = 50.0
    return ledger


def test_report_counts_lost_work_and_prices_each_attempt_at_its_capacity():
    result = {"steps": 150, "steps_redone": 5, "checkpoint_restore_seconds_total": 1.0,
              "checkpoint_save_seconds_total": 0.6}  # fmt: skip
    report = build_report(_ledger(), result, instance_type="test.large", prices=PRICES)
    assert (report["attempts"], report["preemptions"], report["failures"]) == (2, 1, 0)
    assert report["succeeded"] is True
    assert report["steps_redone"] == report["steps_redone_ledger"] == 5  # 25 reached, resumed at 20
    assert report["billed_seconds"] == 150.0
    assert (report["spot_seconds"], report["on_demand_seconds"]) == (100.0, 50.0)
    assert report["cost_usd"] == pytest.approx((100 * 0.1 + 50 * 0.3) / 3600, abs=1e-6)
    # an uninterrupted run needs 150 of the 155 steps executed, minus the restore time
    uninterrupted = 150 * 150 / 155 - 1.0
    assert report["estimated_uninterrupted_seconds"] == pytest.approx(uninterrupted, abs=1e-3)
    assert report["on_demand_cost_usd"] == pytest.approx(uninterrupted * 0.3 / 3600, abs=1e-6)
    assert report["savings_usd"] == pytest.approx(report["on_demand_cost_usd"] - report["cost_usd"], abs=1e-6)
    text = format_report(report)
    assert "preemptions 1" in text and "steps redone (lost work) 5" in text
    assert "attempt 1 (try 1, spot): preempted" in text


def test_steps_redone_falls_back_to_the_ledger():
    assert steps_redone_from_ledger(_ledger()) == 5
    report = build_report(_ledger(), None, instance_type="test.large", prices=PRICES)
    assert report["steps_redone"] == 5 and report["steps"] == 150


def test_unknown_instance_type_names_the_fix():
    with pytest.raises(ValueError, match="INSTANCE_PRICES_USD_PER_HOUR"):
        build_report(_ledger(), None, instance_type="x9.huge", prices=PRICES)


def test_the_default_instance_type_has_a_price():
    prices = INSTANCE_PRICES_USD_PER_HOUR[default_for("tollgate_training_instance_type")]
    assert 0 < prices["spot"] < prices["on_demand"]


def test_a_stale_try_cannot_overwrite_the_attempts_ledger(tmp_path):
    """A zombie try reporting after a newer try began is refused; the newer try's record stays."""
    from tollgate.launch import ledger as ledgers

    uri = str(tmp_path)
    stale = ledgers.load(uri, "run-1")
    old = stale.begin(try_number=1, series=1, backend="kubernetes", capacity="spot", instance_type="x")
    ledgers.save(uri, stale, writer=old)
    current = ledgers.load(uri, "run-1")
    new = current.begin(try_number=2, series=1, backend="kubernetes", capacity="spot", instance_type="x")
    ledgers.save(uri, current, writer=new)

    old.finish(Classification(Outcome.SUCCEEDED, "pod succeeded", 0))
    with pytest.raises(ledgers.StaleLedgerWrite, match=r"try 1 .* is stale: try 2 began after it"):
        ledgers.save(uri, stale, writer=old)
    kept = ledgers.load(uri, "run-1")
    assert [(a.try_number, a.outcome) for a in kept.attempts] == [(1, "lost"), (2, "running")]
