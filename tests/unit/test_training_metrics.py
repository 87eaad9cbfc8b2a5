"""Holdout metrics against scikit-learn's reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from tollgate.training.metrics import evaluate, expected_calibration_error

pytestmark = pytest.mark.unit


def test_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    p = np.round(np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1), 2)  # rounded: many tied scores
    m = evaluate(y, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), rel=1e-9)


def test_calibration_error() -> None:
    y = np.array([0] * 80 + [1] * 20)
    assert expected_calibration_error(y, np.full(100, 0.2)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(100, 0.7)) == pytest.approx(0.5)
    # two bins: p=0.1 where the rate is 0.5, p=0.9 where the rate is 0.5 -> 0.4 each, half the weight each
    y2, p2 = np.array([0, 1, 0, 1]), np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(y2, p2) == pytest.approx(0.4)


def test_one_class_gives_nan_auc_not_a_crash() -> None:
    m = evaluate(np.zeros(10, dtype=int), np.linspace(0.1, 0.9, 10))
    assert np.isnan(m["auc"]) and m["log_loss"] > 0
