"""Stage verdicts on constructed logs: pass, fail, inconclusive, SRM, and a sealed evidence record."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tollgate.evaluation import canary_schema as col
from tollgate.evaluation.canary_settings import CanarySettings
from tollgate.evaluation.canary_simulation import canary_log, shadow_log
from tollgate.evaluation.canary_verdict import FAIL, INCONCLUSIVE, PASS, analyse_canary, analyse_shadow
from tollgate.extensions import TaskType

pytestmark = pytest.mark.unit

SMALL = CanarySettings(
    min_challenger_samples=1500, min_champion_samples=1500, min_labelled_pairs=3000, bootstrap_resamples=200
)


def _canary(seed: int = 1, **kwargs) -> dict:
    return analyse_canary(canary_log(np.random.default_rng(seed), 8000, 0.25, **kwargs), "canary_25", SMALL)


def test_a_challenger_like_the_champion_passes_with_every_statistic_and_its_sample_size():
    record = _canary()
    assert record["verdict"] == PASS, record["reasons"]
    names = {s["name"]: s for s in record["statistics"]}
    assert set(names) == {"error_rate_difference", "latency_shift_ms", "p99_ratio"}
    assert all(s["n"] > 1500 and s["low"] <= s["estimate"] <= s["high"] for s in names.values())


def test_a_slower_challenger_fails_on_latency():
    record = _canary(latency_factor=1.3)
    assert record["verdict"] == FAIL
    assert any("latency_shift_ms" in r for r in record["reasons"])


def test_a_heavier_tail_fails_on_the_p99_ratio_though_the_median_holds():
    log = canary_log(np.random.default_rng(2), 8000, 0.25)
    c = log[col.ARM] == col.CHALLENGER
    tail = c & (np.random.default_rng(3).uniform(size=len(log)) < 0.03)
    log.loc[tail, col.LATENCY_MS] *= 4
    record = analyse_canary(log, "canary_25", SMALL)
    assert record["verdict"] == FAIL
    assert [s["rejected"] for s in record["statistics"] if s["name"] == "p99_ratio"] == [True]


def test_errors_fail_by_the_sequential_test_and_by_the_hard_limit():
    assert _canary(error_rate_c=0.04)["verdict"] == FAIL
    hard = analyse_canary(
        canary_log(np.random.default_rng(1), 400, 0.25, error_rate_c=0.5), "canary_25", SMALL
    )
    assert hard["verdict"] == FAIL and any("hard limit" in r for r in hard["reasons"])


def test_sample_ratio_mismatch_is_inconclusive_never_pass():
    log = canary_log(np.random.default_rng(1), 8000, 0.25)
    dropped = log.drop(log[log[col.ARM] == col.CHALLENGER].index[:300])  # lost challenger logs
    record = analyse_canary(dropped, "canary_25", SMALL)
    assert record["verdict"] == INCONCLUSIVE and record["srm_p_value"] < 0.001
    assert "sample ratio mismatch" in record["reasons"][0]


def test_a_huge_regression_with_few_points_does_not_pass():
    record = analyse_canary(
        canary_log(np.random.default_rng(1), 60, 0.25, latency_factor=7.5), "canary_25", SMALL
    )
    assert record["verdict"] != PASS
    assert any("too few samples" in r for r in record["reasons"])


def test_shadow_binary_pass_fail_and_not_enough_labels():
    log, labels = shadow_log(np.random.default_rng(4), 6000)
    assert analyse_shadow(log, labels, TaskType.BINARY, settings=SMALL)["verdict"] == PASS
    worse_log, worse_labels = shadow_log(np.random.default_rng(4), 6000, noise_c=2.0)
    record = analyse_shadow(worse_log, worse_labels, TaskType.BINARY, settings=SMALL)
    assert record["verdict"] == FAIL and any("delta_auc" in r for r in record["reasons"])
    miscalibrated = shadow_log(np.random.default_rng(4), 6000, calibration_c=2.0)
    assert analyse_shadow(*miscalibrated, TaskType.BINARY, settings=SMALL)["verdict"] == FAIL
    young = shadow_log(np.random.default_rng(4), 6000, labelled_share=0.2)
    record = analyse_shadow(*young, TaskType.BINARY, settings=SMALL)
    assert record["verdict"] == INCONCLUSIVE and "labelled shadow pairs" in record["reasons"][0]


def test_shadow_multiclass_uses_paired_accuracy_and_log_loss():
    rng = np.random.default_rng(5)
    n = 4000
    label = rng.integers(0, 3, n)
    onehot = np.eye(3)[label]
    good = 0.6 * onehot + 0.4 * rng.dirichlet([1, 1, 1], n)
    bad = 0.3 * onehot + 0.7 * rng.dirichlet([1, 1, 1], n)
    log, _ = shadow_log(rng, n)
    log[col.SERVED_OUTPUT] = list(good)
    labels = pd.DataFrame({col.REQUEST_ID: log[col.REQUEST_ID], col.LABEL: label})
    log[col.SHADOW_OUTPUT] = list(good)
    same = analyse_shadow(log, labels, "multiclass_classification", settings=SMALL)
    assert same["verdict"] == PASS
    assert {s["name"] for s in same["statistics"]} == {"delta_accuracy_loss", "delta_log_loss"}
    log[col.SHADOW_OUTPUT] = list(bad)
    assert analyse_shadow(log, labels, TaskType.MULTICLASS, settings=SMALL)["verdict"] == FAIL


def test_evidence_is_json_and_sealed_by_sha256():
    a, b = _canary(), _canary()
    assert json.loads(json.dumps(a)) == a
    assert a["sha256"] == b["sha256"] and len(a["sha256"]) == 64
    assert _canary(seed=9)["sha256"] != a["sha256"]


def test_a_log_with_other_column_names_is_refused_with_the_fix():
    log = canary_log(np.random.default_rng(1), 100, 0.25).rename(columns={col.LATENCY_MS: "latency"})
    with pytest.raises(ValueError, match="canary_schema"):
        analyse_canary(log, "canary_25", SMALL)
    with pytest.raises(ValueError, match="no canary weight"):
        analyse_canary(canary_log(np.random.default_rng(1), 100, 0.25), "canary_99", SMALL)
