"""Statistics of the shadow and canary analysis: pure functions over numpy arrays.

Each harm test returns a one-sided p-value for "the challenger is worse than tolerated", so one
Holm step can combine them; intervals are reported with each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Result:
    """One statistic: its estimate, interval, p-value of harm (None: no test), sample size."""

    name: str
    estimate: float
    low: float
    high: float
    p_value: float | None
    n: int
    limit: float | None = None

    def as_dict(self) -> dict:
        return {
            k: (None if v is None else (v if isinstance(v, str) else float(v)))
            for k, v in self.__dict__.items()
        }


def sample_ratio_mismatch(counts: list[int], weights: list[float]) -> float:
    """Chi-square p-value of arm counts against the configured weights (SRM)."""
    total = sum(counts)
    expected = np.asarray(weights, float) / sum(weights) * total
    return float(stats.chisquare(counts, expected).pvalue)


def msprt_error_rate(errors_c: int, n_c: int, errors_b: int, n_b: int, tau: float) -> Result:
    """Mixture SPRT on the difference of error rates (Johari, Pekelis & Walsh 2017).

    Normal approximation of the difference with a N(0, tau^2) mixing prior; the always-valid
    p-value 1/Lambda may be read at every look. One-sided: only an increase counts as harm.
    """
    p_c, p_b = errors_c / max(n_c, 1), errors_b / max(n_b, 1)
    diff = p_c - p_b
    var = max(p_c * (1 - p_c) / max(n_c, 1) + p_b * (1 - p_b) / max(n_b, 1), 1e-12)
    log_lambda = 0.5 * np.log(var / (var + tau**2)) + diff**2 * tau**2 / (2 * var * (var + tau**2))
    p = 1.0 if diff <= 0 else float(min(1.0, np.exp(-log_lambda)))
    half = 1.959963984540054 * np.sqrt(var)
    return Result("error_rate_difference", diff, diff - half, diff + half, p, n_c)


def hodges_lehmann(
    challenger: np.ndarray,
    champion: np.ndarray,
    confidence: float = 0.95,
    max_pairs: int = 4_000_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Hodges-Lehmann shift (median of pairwise differences) with its distribution-free interval.

    The interval's ends are order statistics of the pairwise differences at the Mann-Whitney
    critical ranks (normal approximation). Large samples are subsampled to ``max_pairs`` pairs.
    """
    rng = np.random.default_rng(seed)
    x, y = np.asarray(challenger, float), np.asarray(champion, float)
    while len(x) * len(y) > max_pairs:
        x = rng.choice(x, min(len(x), 2000), replace=False) if len(x) > 2000 else x
        y = rng.choice(y, max_pairs // len(x), replace=False)
    diffs = np.sort(np.subtract.outer(x, y).ravel())
    m, n = len(x), len(y)
    z = stats.norm.ppf(0.5 + confidence / 2)
    k = int(np.floor(m * n / 2 - z * np.sqrt(m * n * (m + n + 1) / 12)))
    k = min(max(k, 0), len(diffs) - 1)
    return float(np.median(diffs)), float(diffs[k]), float(diffs[len(diffs) - 1 - k])


def latency_shift(challenger: np.ndarray, champion: np.ndarray, tolerance_ms: float, seed: int = 0) -> Result:
    """One-sided Mann-Whitney of H0 "shift <= tolerance" (the challenger's latencies less the
    tolerance against the champion's), with the Hodges-Lehmann shift and interval."""
    p = float(
        stats.mannwhitneyu(np.asarray(challenger) - tolerance_ms, champion, alternative="greater").pvalue
    )
    est, low, high = hodges_lehmann(challenger, champion, seed=seed)
    return Result("latency_shift_ms", est, low, high, p, len(challenger), tolerance_ms)


def p99_ratio(
    challenger: np.ndarray, champion: np.ndarray, limit: float, resamples: int, seed: int = 0
) -> Result:
    """p99 ratio with a bootstrap interval; harm p-value for H0 "ratio <= limit"."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(challenger, float), np.asarray(champion, float)
    ratios = np.empty(resamples)
    for i in range(resamples):
        ratios[i] = np.percentile(rng.choice(x, len(x)), 99) / np.percentile(rng.choice(y, len(y)), 99)
    est = float(np.percentile(x, 99) / np.percentile(y, 99))
    # bootstrap standard error on the log scale, normal tail: a percentile p-value could not go
    # below 1/(resamples+1), far above a Holm share of a 1 % rollout budget
    se = max(float(np.std(np.log(ratios), ddof=1)), 1e-12)
    p = float(stats.norm.sf((np.log(est) - np.log(limit)) / se))
    low, high = np.exp(np.log(est) + np.array([-1.959963984540054, 1.959963984540054]) * se)
    return Result("p99_ratio", est, float(low), float(high), p, len(x), limit)


def _midranks(values: np.ndarray) -> np.ndarray:
    return stats.rankdata(values, method="average")


def delong_paired(
    labels: np.ndarray, score_c: np.ndarray, score_b: np.ndarray
) -> tuple[float, float, float, float]:
    """AUCs of two scores on the same rows and the DeLong variance of their difference.

    Fast DeLong by midranks (Sun & Xu 2014). Returns (auc_c, auc_b, delta, var_delta).
    """
    y = np.asarray(labels).astype(bool)
    pos_n, neg_n = int(y.sum()), int((~y).sum())
    if pos_n == 0 or neg_n == 0:
        raise ValueError("ΔAUC needs both classes among the labelled pairs")
    v10, v01, aucs = [], [], []
    for s in (np.asarray(score_c, float), np.asarray(score_b, float)):
        pos, neg = s[y], s[~y]
        tx, ty, tz = _midranks(pos), _midranks(neg), _midranks(np.concatenate([pos, neg]))
        auc = (tz[:pos_n].sum() - pos_n * (pos_n + 1) / 2) / (pos_n * neg_n)
        v10.append((tz[:pos_n] - tx) / neg_n)
        v01.append(1 - (tz[pos_n:] - ty) / pos_n)
        aucs.append(auc)
    s10, s01 = np.cov(np.vstack(v10)), np.cov(np.vstack(v01))
    cov = s10 / pos_n + s01 / neg_n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return float(aucs[0]), float(aucs[1]), float(aucs[0] - aucs[1]), float(max(var, 0.0))


def auc_non_inferiority(
    labels: np.ndarray, score_c: np.ndarray, score_b: np.ndarray, margin: float
) -> Result:
    """Paired ΔAUC (challenger - champion); harm p-value for H0 "ΔAUC >= -margin"."""
    _, _, delta, var = delong_paired(labels, score_c, score_b)
    se = max(np.sqrt(var), 1e-12)
    p = float(stats.norm.cdf((delta + margin) / se))
    return Result("delta_auc", delta, delta - 1.96 * se, delta + 1.96 * se, p, len(labels), -margin)


def paired_mean_harm(name: str, harm: np.ndarray, margin: float) -> Result:
    """Per-row paired differences where larger is worse (e.g. Δ log loss); z-test of H0 "mean <= margin"."""
    d = np.asarray(harm, float)
    se = max(d.std(ddof=1) / np.sqrt(len(d)), 1e-12)
    p = float(stats.norm.sf((d.mean() - margin) / se))
    return Result(
        name, float(d.mean()), float(d.mean() - 1.96 * se), float(d.mean() + 1.96 * se), p, len(d), margin
    )


def paired_bootstrap_harm(
    name: str, harm: np.ndarray, margin: float, resamples: int, seed: int = 0
) -> Result:
    """Paired bootstrap of the mean per-row difference (larger is worse); harm p for H0 "mean <= margin"."""
    rng = np.random.default_rng(seed)
    d = np.asarray(harm, float)
    idx = rng.integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1)
    se = max(float(means.std(ddof=1)), 1e-12)  # normal tail, as in p99_ratio
    p = float(stats.norm.sf((d.mean() - margin) / se))
    low, high = d.mean() - 1.959963984540054 * se, d.mean() + 1.959963984540054 * se
    return Result(name, float(d.mean()), float(low), float(high), p, len(d), margin)


def log_loss_rows(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per-row log loss: ``proba`` is P(positive) (1-D) or class probabilities (2-D, labels index them)."""
    eps = 1e-15
    proba = np.asarray(proba, float)
    if proba.ndim == 1:
        p = np.clip(proba, eps, 1 - eps)
        y = np.asarray(labels, float)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))
    picked = proba[np.arange(len(proba)), np.asarray(labels, int)]
    return -np.log(np.clip(picked, eps, 1.0))


def observed_expected(labels: np.ndarray, proba: np.ndarray, tolerance: float) -> Result:
    """Observed / expected positives of the challenger; harm p for H0 "|O/E - 1| <= tolerance"."""
    p = np.asarray(proba, float)
    observed, expected = float(np.sum(labels)), float(p.sum())
    sd = max(np.sqrt(np.sum(p * (1 - p))), 1e-12)
    ratio = observed / max(expected, 1e-12)
    # the nearer edge of the tolerated band decides (a two-sided equivalence bound)
    z_high = (observed - expected * (1 + tolerance)) / sd
    z_low = (expected * (1 - tolerance) - observed) / sd
    p_value = float(min(1.0, stats.norm.sf(max(z_high, z_low))))
    half = 1.96 * sd / max(expected, 1e-12)
    return Result("observed_expected", ratio, ratio - half, ratio + half, p_value, len(p), tolerance)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's deciles (empty bins floored at 1e-4)."""
    ref, cur = np.asarray(reference, float), np.asarray(current, float)
    edges = np.unique(np.percentile(ref, np.linspace(0, 100, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    a = np.maximum(np.histogram(ref, edges)[0] / len(ref), 1e-4)
    b = np.maximum(np.histogram(cur, edges)[0] / len(cur), 1e-4)
    return float(np.sum((b - a) * np.log(b / a)))


def holm(p_values: dict[str, float], alpha: float) -> dict[str, bool]:
    """Holm step-down: which hypotheses are rejected at family-wise level ``alpha``."""
    order = sorted(p_values, key=p_values.get)
    rejected, m = {}, len(order)
    still = True
    for i, name in enumerate(order):
        still = still and p_values[name] <= alpha / (m - i)
        rejected[name] = still
    return rejected
