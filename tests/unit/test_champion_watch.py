"""The watch after promotion, on constructed prediction logs: which requests count on each side, and the
verdict (a slower or erring new champion fails, the same one passes, too few requests is inconclusive)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tollgate.config import default_for
from tollgate.evaluation import canary_schema as col
from tollgate.evaluation.canary_verdict import FAIL, INCONCLUSIVE, PASS
from tollgate.evaluation.champion_watch import WatchPlan, analyse_watch, select_rows

pytestmark = pytest.mark.unit

PROMOTED_AT = 1_800_000_000.0
PLAN = WatchPlan(watch_s=600, baseline_s=3600, min_samples=300, analysis=WatchPlan().analysis)
FACTS = {"model_name": "m", "version": "5", "previous": "4", "promoted_at": PROMOTED_AT}


def _requests(rng, n, version, start, span, *, median_ms=10.0, add_ms=0.0, error_rate=0.005, arm="champion"):
    ts = start + np.sort(rng.uniform(0, span, n))
    return pd.DataFrame(
        {
            col.REQUEST_ID: [f"{version}-{start}-{i}" for i in range(n)],
            col.TIMESTAMP: pd.to_datetime(ts, unit="s", utc=True),
            col.ROLLOUT_ID: None,
            col.ARM: arm,
            col.SERVED_VERSION: version,
            col.SHADOW_VERSION: None,
            col.SERVED_OUTPUT: rng.uniform(size=n),
            col.SHADOW_OUTPUT: None,
            col.LATENCY_MS: rng.lognormal(np.log(median_ms), 0.3, n) + add_ms,
            col.SHADOW_LATENCY_MS: np.nan,
            col.STATUS: np.where(rng.uniform(size=n) < error_rate, "error", col.STATUS_OK),
        }
    )


def _log(rng, n=1500, **new) -> pd.DataFrame:
    return pd.concat(
        [
            _requests(rng, n, "4", PROMOTED_AT - 3000, 2900),  # previous, as champion, inside its baseline
            _requests(rng, 400, "4", PROMOTED_AT - 9000, 1000),  # previous, too long ago to count
            _requests(rng, 200, "3", PROMOTED_AT - 3000, 2900, add_ms=50),  # another version entirely
            _requests(rng, 300, "4", PROMOTED_AT + 10, 500, arm="challenger"),  # not the champion arm
            _requests(rng, n, "5", PROMOTED_AT + 1, 590, **new),  # the new champion, in the watch
            _requests(rng, 300, "5", PROMOTED_AT + 700, 100, add_ms=500),  # after the watch window
        ],
        ignore_index=True,
    )


def test_each_side_holds_only_its_champions_requests_in_its_window():
    log = _log(np.random.default_rng(1))
    new, baseline = select_rows(log, FACTS, PROMOTED_AT + PLAN.watch_s, PLAN.baseline_s)
    assert len(new) == 1500 and set(new[col.SERVED_VERSION]) == {"5"}
    assert len(baseline) == 1500 and set(baseline[col.SERVED_VERSION]) == {"4"}
    assert (new[col.TIMESTAMP] >= pd.Timestamp(PROMOTED_AT, unit="s", tz="UTC")).all()
    assert (baseline[col.ARM] == col.CHAMPION).all()


def _verdict(rng, **new) -> dict:
    log = _log(rng, **new)
    return analyse_watch(*select_rows(log, FACTS, PROMOTED_AT + PLAN.watch_s, PLAN.baseline_s), PLAN)


def test_the_same_model_passes():
    record = _verdict(np.random.default_rng(2))
    assert record["verdict"] == PASS, record["reasons"]
    assert record["samples"] == {"new": 1500, "previous": 1500}


def test_a_slower_new_champion_fails_on_latency():
    record = _verdict(np.random.default_rng(3), add_ms=40.0)
    assert record["verdict"] == FAIL
    assert any("latency" in r or "p99" in r for r in record["reasons"]), record["reasons"]


def test_an_erring_new_champion_fails_on_errors():
    record = _verdict(np.random.default_rng(4), error_rate=0.2)
    assert record["verdict"] == FAIL
    assert any("error" in r for r in record["reasons"]), record["reasons"]


def test_too_few_requests_is_inconclusive_even_when_slower():
    record = _verdict(np.random.default_rng(5), n=100, add_ms=40.0)
    assert record["verdict"] == INCONCLUSIVE
    assert "too few requests" in record["reasons"][0]


def test_the_embedded_default_parses_and_unknown_keys_are_named():
    plan = WatchPlan.from_json(default_for("tollgate_watch"))
    assert plan.replay and plan.watch_s > 0
    with pytest.raises(ValueError, match=r"unknown keys \['watch_hours'\]"):
        WatchPlan.from_json(json.dumps({"watch_hours": 6}))
    with pytest.raises(ValueError, match=r"tollgate_watch\.analysis"):
        WatchPlan.from_json(json.dumps({"analysis": {"p99": 2}}))
