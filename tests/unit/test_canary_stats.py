"""Each canary statistic against a reference computation (scipy, sklearn, brute force, by hand)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats
from sklearn.metrics import log_loss, roc_auc_score

from tollgate.evaluation import canary_stats as st

pytestmark = pytest.mark.unit
rng = np.random.default_rng(7)


def test_srm_matches_the_chi_square_by_hand():
    counts, weights = [480, 9520], [0.05, 0.95]
    expected = [500, 9500]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(counts, expected, strict=True))
    assert st.sample_ratio_mismatch(counts, weights) == pytest.approx(stats.chi2.sf(chi2, 1))
    assert st.sample_ratio_mismatch([700, 9300], weights) < 1e-6  # a broken split


def test_msprt_likelihood_ratio_matches_numerical_integration_over_the_prior():
    e_c, n_c, e_b, n_b, tau = 190, 8000, 1000, 100000, 0.01
    r = st.msprt_error_rate(e_c, n_c, e_b, n_b, tau)
    p_c, p_b = e_c / n_c, e_b / n_b
    v = p_c * (1 - p_c) / n_c + p_b * (1 - p_b) / n_b
    d = p_c - p_b
    num, _ = integrate.quad(
        lambda t: stats.norm.pdf(d, t, np.sqrt(v)) * stats.norm.pdf(t, 0, tau), -0.2, 0.2, points=[d]
    )
    lam = num / stats.norm.pdf(d, 0, np.sqrt(v))
    assert r.p_value == pytest.approx(min(1.0, 1 / lam), rel=1e-4)
    assert st.msprt_error_rate(80, 8000, 1000, 100000, tau).p_value == 1.0  # fewer errors is never harm


def test_hodges_lehmann_is_the_median_of_all_pairwise_differences():
    x, y = rng.normal(3, 1, 40), rng.normal(2, 1, 50)
    est, low, high = st.hodges_lehmann(x, y)
    assert est == pytest.approx(np.median([a - b for a in x for b in y]))
    assert low < est < high
    # the interval's lower end is above 0 exactly when the one-sided Mann-Whitney rejects at 2.5 %
    assert (low > 0) == (stats.mannwhitneyu(x, y, alternative="greater", use_continuity=False).pvalue < 0.025)


def test_latency_shift_tests_the_shift_beyond_the_tolerance():
    y = rng.lognormal(np.log(10), 0.4, 3000)
    x = y[:1000] + 3.0
    assert st.latency_shift(x, y, 1.0).p_value < 1e-6
    assert st.latency_shift(x, y, 5.0).p_value > 0.5
    assert st.latency_shift(x, y, 1.0).p_value == pytest.approx(
        stats.mannwhitneyu(x - 1.0, y, alternative="greater").pvalue
    )


def test_p99_ratio_bootstrap_sees_a_variance_increase_that_keeps_the_median():
    y = rng.lognormal(np.log(10), 0.3, 20000)
    x = np.exp(np.log(10) + (np.log(rng.lognormal(np.log(10), 0.3, 2000)) - np.log(10)) * 2)
    r = st.p99_ratio(x, y, 1.10, 300)
    assert r.estimate == pytest.approx(np.percentile(x, 99) / np.percentile(y, 99))
    assert r.low > 1.10 and r.p_value < 0.01


def _delong_brute_force(y, a, b):
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def psi(s):
        return (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])

    comps = [psi(s) for s in (a, b)]
    v10 = np.vstack([c.mean(axis=1) for c in comps])
    v01 = np.vstack([c.mean(axis=0) for c in comps])
    cov = np.cov(v10) / len(pos) + np.cov(v01) / len(neg)
    return cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]


def test_delong_matches_sklearn_auc_and_the_brute_force_variance():
    y = rng.integers(0, 2, 300)
    a = np.round(y * 0.8 + rng.normal(0, 1, 300), 1)  # rounded: ties exercise the midranks
    b = np.round(y * 0.5 + rng.normal(0, 1, 300), 1)
    auc_a, auc_b, delta, var = st.delong_paired(y, a, b)
    assert auc_a == pytest.approx(roc_auc_score(y, a)) and auc_b == pytest.approx(roc_auc_score(y, b))
    assert delta == pytest.approx(auc_a - auc_b)
    assert var == pytest.approx(_delong_brute_force(y, a, b))


def test_log_loss_rows_average_to_sklearn_log_loss():
    y = rng.integers(0, 2, 200)
    p = rng.uniform(0.01, 0.99, 200)
    assert st.log_loss_rows(y, p).mean() == pytest.approx(log_loss(y, p))
    probs = rng.dirichlet([1, 1, 1], 200)
    labels = rng.integers(0, 3, 200)
    assert st.log_loss_rows(labels, probs).mean() == pytest.approx(log_loss(labels, probs, labels=[0, 1, 2]))


def test_paired_bootstrap_interval_brackets_the_mean_and_tests_against_the_margin():
    d = rng.normal(0.01, 0.1, 4000)
    r = st.paired_bootstrap_harm("d", d, 0.0, 400)
    assert r.low < d.mean() < r.high and r.p_value < 0.01
    assert st.paired_bootstrap_harm("d", d, 0.02, 400).p_value > 0.5


def test_observed_expected_flags_miscalibration_only_beyond_the_tolerance():
    p = rng.uniform(0.05, 0.3, 20000)
    y = rng.uniform(size=20000) < p
    assert st.observed_expected(y, p, 0.10).p_value > 0.5
    assert st.observed_expected(y, p * 0.7, 0.10).p_value < 1e-6  # O/E about 1.43


def test_psi_matches_the_sum_by_hand():
    ref, cur = rng.normal(0, 1, 5000), rng.normal(0.3, 1, 5000)
    edges = np.percentile(ref, np.linspace(0, 100, 11))
    edges[0], edges[-1] = -np.inf, np.inf
    a = np.histogram(ref, edges)[0] / 5000
    b = np.histogram(cur, edges)[0] / 5000
    assert st.psi(ref, cur) == pytest.approx(np.sum((b - a) * np.log(b / a)))
    assert st.psi(ref, ref) == pytest.approx(0.0)


def test_holm_steps_down_and_stops_at_the_first_non_rejection():
    assert st.holm({"a": 0.01, "b": 0.04, "c": 0.03}, 0.05) == {"a": True, "c": False, "b": False}
    assert st.holm({"a": 0.01, "b": 0.04, "c": 0.02}, 0.05) == {"a": True, "c": True, "b": True}
