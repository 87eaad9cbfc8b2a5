"""The HTML canary report: per-variant figures computed from the log agree with independent computations
(scikit-learn's calibration curve, numpy counts), and the page shows every variant, every verdict, and
escapes what it quotes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve

from tollgate.evaluation import canary_schema as col
from tollgate.evaluation.canary_report import calibration, histograms, render, variants
from tollgate.evaluation.canary_simulation import canary_log, shadow_log

pytestmark = pytest.mark.unit


def _rollout_log() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    shadow, labels = shadow_log(rng, 3000, calibration_c=2.0)
    canary = canary_log(rng, 2000, 0.25, latency_factor=1.5)
    canary[col.REQUEST_ID] = canary[col.REQUEST_ID] + 10_000  # no label for these
    return pd.concat([shadow, canary], ignore_index=True), labels


def test_each_variant_holds_its_own_requests_latencies_and_labels():
    log, labels = _rollout_log()
    got = variants(log, labels)
    ok = log[log[col.STATUS] == col.STATUS_OK]
    champion = ok[ok[col.ARM] == col.CHAMPION]
    mirrored = ok[ok[col.SHADOW_OUTPUT].notna()]
    assert len(got["champion"]["latency_ms"]) == len(champion)
    assert len(got["challenger (canary)"]["latency_ms"]) == (ok[col.ARM] == col.CHALLENGER).sum()
    np.testing.assert_allclose(
        np.sort(got["challenger (shadow)"]["latency_ms"]),
        np.sort(mirrored[col.SHADOW_LATENCY_MS].to_numpy(float)),
    )
    # only the shadow pairs have labels; the canary requests' ids have none
    assert len(got["challenger (shadow)"]["labels"]) == len(labels)
    assert len(got["challenger (canary)"]["labels"]) == 0


def test_calibration_matches_scikit_learns_uniform_bins():
    log, labels = _rollout_log()
    shadow = variants(log, labels)["challenger (shadow)"]
    points = calibration(shadow["labelled_scores"], shadow["labels"])
    observed, predicted = calibration_curve(shadow["labels"], shadow["labelled_scores"], n_bins=10)
    np.testing.assert_allclose([p["observed"] for p in points], observed)
    np.testing.assert_allclose([p["predicted"] for p in points], predicted)
    assert sum(p["n"] for p in points) == len(shadow["labels"])


def test_histogram_shares_sum_to_one_per_variant_on_shared_edges():
    rng = np.random.default_rng(0)
    series = {"champion": rng.lognormal(2, 0.4, 500), "challenger (canary)": rng.lognormal(2.4, 0.4, 80)}
    hist = histograms(series, log_scale=True)
    assert len(hist["edges"]) == 31
    for name, shares in hist["shares"].items():
        assert sum(shares) == pytest.approx(1.0), name


def test_the_page_shows_every_variant_every_verdict_and_escapes_what_it_quotes():
    log, labels = _rollout_log()
    rollout = {"model_name": "m", "version": "2", "rollout_id": "m-v2-run", "task": "binary_classification"}
    stat = {"name": "p99_latency_ratio", "estimate": 1.5, "low": 1.4, "high": 1.6, "n": 512}
    records = {
        "shadow": {"verdict": "PASS", "reasons": [], "statistics": [stat]},
        "canary_1": {
            "verdict": "FAIL",
            "reasons": ["p99 <script>alert(1)</script> too slow"],
            "statistics": [],
        },
        "canary_5": None,
    }
    page = render(rollout, records, log, labels)
    assert page.count("<svg") == 3  # latency, scores, calibration
    for name in ("champion", "challenger (canary)", "challenger (shadow)"):
        assert name in page
    assert "canary_5</td><td>not run" in page
    assert "p99_latency_ratio: 1.5 [1.4, 1.6] n=512" in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_a_regression_model_has_no_calibration_curve():
    log, labels = _rollout_log()
    rollout = {"model_name": "m", "version": "2", "rollout_id": "r", "task": "regression"}
    assert render(rollout, {}, log, labels).count("<svg") == 2
