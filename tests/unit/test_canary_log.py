"""The router's prediction log (written by the real PredictionLog as Parquet) and the replay's labels feed,
read back through the adapter, give the analysis exactly what it gives on the source rows."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from tollgate.evaluation import canary_schema as col
from tollgate.evaluation.canary_log import from_router_log, load_for_analysis, matured_labels
from tollgate.evaluation.canary_settings import CanarySettings
from tollgate.evaluation.canary_simulation import canary_log, shadow_log
from tollgate.evaluation.canary_verdict import FAIL, PASS, analyse_canary, analyse_shadow
from tollgate.extensions import TaskType
from tollgate.serving.predlog import PredictionLog, read_log
from tollgate.serving.replay import write_labels

pytestmark = pytest.mark.unit

SMALL = CanarySettings(
    min_challenger_samples=500, min_champion_samples=500, min_labelled_pairs=1500, bootstrap_resamples=200
)


def _router_row(source: pd.Series, ts: float, rollout_id: str) -> dict:
    """One source row as app.py logs it: HTTP status, JSON outputs of a one-row request."""
    ok = source[col.STATUS] == col.STATUS_OK
    row = {
        "request_id": str(source[col.REQUEST_ID]), "ts": ts, "model_name": "m", "rollout_id": rollout_id,
        "arm": source[col.ARM], "served_version": source[col.SERVED_VERSION],
        "served_output": json.dumps([float(source[col.SERVED_OUTPUT])]) if ok else None,
        "latency_ms": float(source[col.LATENCY_MS]), "status": 200 if ok else 500, "fallback": False,
        "rows": 1, "request_key": str(source[col.REQUEST_ID]),
    }  # fmt: skip
    if isinstance(source[col.SHADOW_VERSION], str):
        row.update(
            shadow_version=source[col.SHADOW_VERSION],
            shadow_output=json.dumps([float(source[col.SHADOW_OUTPUT])]),
            shadow_latency_ms=float(source[col.SHADOW_LATENCY_MS]),
            shadow_status="ok",
        )
    return row


def _write(tmp_path, frame: pd.DataFrame, rollout_id: str, extra: list[dict] = ()) -> str:
    root = str(tmp_path / "storage")
    plog = PredictionLog(root, flush_s=60)
    now = time.time()
    for i, (_, source) in enumerate(frame.iterrows()):
        plog.append(_router_row(source, now + i * 1e-4, rollout_id))
    for row in extra:
        plog.append({"ts": now, "model_name": "m", "request_key": "k", **row})
    plog.flush()
    return root


def test_a_canary_read_from_the_router_log_gets_the_verdict_of_its_source_rows(tmp_path):
    source = canary_log(np.random.default_rng(3), 4000, 0.25, latency_factor=1.4, error_rate_c=0.02)
    source[col.REQUEST_ID] = source[col.REQUEST_ID].astype(str)
    noise = [  # rows the comparison must ignore or count as challenger errors
        {"request_id": "no-model", "rollout_id": "r1", "arm": None, "status": 503},
        {"request_id": "bad-input", "rollout_id": "r1", "arm": "champion", "status": 422},
        {"request_id": "other-rollout", "rollout_id": "r0", "arm": "challenger", "status": 200,
         "latency_ms": 1.0, "served_output": "[0.5]", "rows": 1},
    ]  # fmt: skip
    root = _write(tmp_path, source, "r1", noise)

    log, _ = load_for_analysis(root, "r1", as_of=time.time())

    assert len(log) == len(source)
    direct, adapted = analyse_canary(source, "canary_25", SMALL), analyse_canary(log, "canary_25", SMALL)
    assert adapted["verdict"] == direct["verdict"] == FAIL
    assert adapted["samples"] == direct["samples"] and adapted["errors"] == direct["errors"]
    pick = {s["name"]: s["estimate"] for s in adapted["statistics"]}
    assert pick == pytest.approx({s["name"]: s["estimate"] for s in direct["statistics"]})


def test_a_canary_that_failed_and_fell_back_to_the_champion_counts_as_a_challenger_error(tmp_path):
    root = _write(
        tmp_path,
        canary_log(np.random.default_rng(1), 10, 0.5).iloc[:0],
        "r1",
        [{"request_id": "f", "rollout_id": "r1", "arm": "challenger", "status": 200, "fallback": True,
          "served_output": "[0.4]", "latency_ms": 3.0, "rows": 1}],
    )  # fmt: skip
    log = from_router_log(read_log(root), "r1")
    assert log[col.STATUS].tolist() == ["error"] and log[col.SERVED_OUTPUT].tolist() == [None]


def test_shadow_pairs_and_matured_labels_from_the_router_log_and_the_replay_feed(tmp_path):
    source, labels = shadow_log(np.random.default_rng(5), 3000, calibration_c=1.6)
    root = _write(tmp_path, source, "r2")
    now = time.time()
    matured = [
        {"request_id": r, "request_key": r, "label": int(y), "sent_at": now - 5, "available_at": now - 1}
        for r, y in zip(labels[col.REQUEST_ID], labels[col.LABEL], strict=True)
    ]
    write_labels(root, "replay-a", matured)
    late = {**matured[1], "request_id": "late", "request_key": "late", "available_at": now + 3600}
    write_labels(root, "replay-b", [{**matured[0], "available_at": now + 3600}, late])  # not yet matured

    log, got = load_for_analysis(root, "r2", as_of=now)

    assert len(got) == len(labels) and "late" not in set(got[col.REQUEST_ID])
    direct = analyse_shadow(source, labels, TaskType.BINARY, settings=SMALL)
    adapted = analyse_shadow(log, got, TaskType.BINARY, settings=SMALL)
    assert adapted["verdict"] == direct["verdict"] == FAIL  # miscalibrated: O/E
    assert adapted["labelled_pairs"] == direct["labelled_pairs"] == len(labels)
    assert {s["name"]: s["estimate"] for s in adapted["statistics"]} == pytest.approx(
        {s["name"]: s["estimate"] for s in direct["statistics"]}
    )
    calm, _ = shadow_log(np.random.default_rng(5), 3000)
    assert analyse_shadow(calm, labels, TaskType.BINARY, settings=SMALL)["verdict"] == PASS


def test_labels_not_yet_available_are_left_out_and_a_wrong_frame_is_named():
    at = pd.to_datetime([10, 20], unit="s", utc=True)
    feed = pd.DataFrame({"request_id": ["a", "b"], "label": [1, 0], "available_at": at})
    assert matured_labels(feed, as_of=15)[col.REQUEST_ID].tolist() == ["a"]
    with pytest.raises(ValueError, match="not a router prediction log"):
        from_router_log(pd.DataFrame({"request_id": ["a"]}))
