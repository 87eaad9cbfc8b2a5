"""The offline quality gate's decisions: floors for the first model, allowed regressions after."""

from __future__ import annotations

import pytest

from tollgate.evaluation.offline_gate import GateThresholds, decide, metrics_table

pytestmark = pytest.mark.unit

GOOD = {"auc": 0.74, "log_loss": 0.150, "calibration_error": 0.004}


def test_first_model_is_held_to_the_floors_only():
    decision = decide(GOOD, None, GateThresholds(), holdout_rows=1000)
    assert decision.passed and decision.reasons == []
    assert decision.champion is None and decision.holdout_rows == 1000


def test_first_model_below_the_auc_floor_is_rejected_with_the_numbers():
    decision = decide({**GOOD, "auc": 0.52}, None, GateThresholds())
    assert not decision.passed
    assert decision.reasons == ["AUC 0.5200 is below the floor 0.6000"]


def test_regression_against_the_champion_beyond_the_margin_is_rejected():
    champion = {"auc": 0.76, "log_loss": 0.140, "calibration_error": 0.003}
    decision = decide({**GOOD, "calibration_error": 0.030}, champion, GateThresholds())
    assert not decision.passed
    assert any("below the champion's 0.7600" in r for r in decision.reasons)  # AUC drop 0.02 > 0.01
    assert any("log loss 0.1500 is 0.0100 above the champion's 0.1400" in r for r in decision.reasons)
    assert any("calibration error 0.0300" in r for r in decision.reasons)


def test_small_regression_inside_the_margin_passes():
    champion = {"auc": 0.745, "log_loss": 0.149, "calibration_error": 0.004}
    assert decide(GOOD, champion, GateThresholds()).passed


def test_thresholds_from_variable_json_and_typos_refused():
    assert GateThresholds.from_json('{"min_auc": 0.8}').min_auc == 0.8
    assert GateThresholds.from_json("") == GateThresholds()
    with pytest.raises(ValueError, match="unknown offline gate thresholds \\['min_acu'\\]"):
        GateThresholds.from_json('{"min_acu": 0.8}')
    with pytest.raises(ValueError, match="not valid JSON"):
        GateThresholds.from_json("{min_auc: 0.8")


def test_metrics_table_marks_better_and_worse():
    table = metrics_table(GOOD, {"auc": 0.70, "log_loss": 0.140, "calibration_error": 0.004})
    assert "| auc | 0.7400 | 0.7000 | +0.0400 better |" in table
    assert "| log_loss | 0.1500 | 0.1400 | +0.0100 worse |" in table
