"""Holdout metrics: AUC, log loss and expected calibration error (ECE)."""

from __future__ import annotations

import numpy as np

CALIBRATION_BINS = 10
_EPS = 1e-7


def expected_calibration_error(y_true: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Weighted mean |observed click rate - mean predicted probability| over equal-width bins."""
    y = np.asarray(y_true, dtype=np.float64)
    prob = np.asarray(p, dtype=np.float64)
    index = np.minimum((prob * bins).astype(np.int64), bins - 1)
    error = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            error += mask.mean() * abs(y[mask].mean() - prob[mask].mean())
    return float(error)


def roc_auc(y_true: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN with one class.

    numpy only: importing scikit-learn costs seconds at every trainer start.
    """
    y = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    scores = np.asarray(p, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank (1-based) within each run of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y_true: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y_true, dtype=np.float64)
    prob = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob)))


def evaluate(y_true: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """auc, log_loss and calibration_error of click probabilities ``p`` against 0/1 labels."""
    y = np.asarray(y_true).astype(np.int64)
    prob = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    if y.shape != prob.shape:
        raise ValueError(f"labels {y.shape} and probabilities {prob.shape} differ in shape")
    return {
        "auc": roc_auc(y, prob),
        "log_loss": log_loss(y, prob),
        "calibration_error": expected_calibration_error(y, prob),
    }
