"""The simulated upstream source: deterministic, learnable, and each fault does what it says."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tollgate.data import generator, schema

pytestmark = pytest.mark.unit

DAY = "2024-03-01"
ROWS = 4000


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generator.generate(DAY, rows=ROWS)


def test_same_date_and_seed_give_identical_bytes():
    assert generator.partition_bytes(DAY, rows=500) == generator.partition_bytes(DAY, rows=500)
    assert generator.partition_bytes(DAY, rows=500) != generator.partition_bytes(DAY, rows=500, seed=8)
    assert generator.partition_bytes(DAY, rows=500) != generator.partition_bytes("2024-03-02", rows=500)


def test_clean_partition_follows_the_schema(clean: pd.DataFrame):
    assert {c: str(t) for c, t in clean.dtypes.items()} == {
        c: str(pd.Series(dtype=t).dtype) for c, t in schema.COLUMNS.items()
    }
    assert clean[schema.EVENT_ID].is_unique
    assert not clean.isna().any().any()
    for column, (low, high) in schema.VALUE_RANGES.items():
        assert clean[column].between(low, high).all(), column
    assert set(clean["device"]) <= set(schema.DEVICES)
    assert set(clean["country"]) <= set(schema.COUNTRIES)
    day_start = pd.Timestamp(DAY, tz="UTC")
    assert (
        clean[schema.TIMESTAMP].between(day_start, day_start + pd.Timedelta(days=1), inclusive="left").all()
    )
    assert (clean["hour_of_day"] == clean[schema.TIMESTAMP].dt.hour).all()
    assert clean[schema.TIMESTAMP].is_monotonic_increasing


def test_click_rate_is_plausible_and_the_signal_is_learnable(clean: pd.DataFrame):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    def features(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.get_dummies(frame[["device", "country"]].astype(str)).astype(float)
        out["position"] = frame["ad_position"]
        out["log_bid"] = np.log(frame["bid_price"])
        out["log_ctr"] = np.log(frame["user_ctr_7d"] + 0.01)
        out["depth"] = frame["page_depth"]
        return out

    train = generator.generate(DAY, rows=20_000)
    test = generator.generate("2024-03-02", rows=20_000)
    assert 0.02 <= train[schema.LABEL].mean() <= 0.05
    model = LogisticRegression(max_iter=2000).fit(features(train), train[schema.LABEL])
    auc = roc_auc_score(test[schema.LABEL], model.predict_proba(features(test))[:, 1])
    assert auc > 0.68, f"AUC of a plain logistic regression on the next day: {auc:.3f}"


def test_signal_drifts_slowly_over_the_year():
    """Campaign quality rotates with the day of the year: per-campaign click rates change over months."""

    def campaign_ctr(day: str) -> pd.Series:
        frame = generator.generate(day, rows=60_000)
        return frame.groupby("campaign_id")[schema.LABEL].mean()

    winter, spring = campaign_ctr("2024-01-01"), campaign_ctr("2024-04-15")
    next_day = campaign_ctr("2024-01-02")
    assert winter.corr(next_day) > winter.corr(spring)


@pytest.mark.parametrize("fault", generator.ROW_LEVEL_FAULTS)
def test_row_level_faults_touch_a_small_share_of_rows(clean: pd.DataFrame, fault: str):
    faulty = generator.inject(clean, fault, DAY, share=0.02)
    if fault == "duplicate_ids":
        assert len(faulty) == ROWS + 80
        assert faulty[schema.EVENT_ID].duplicated().sum() == 80
        return
    assert len(faulty) == ROWS
    changed = ~(faulty.astype(str) == clean.astype(str)).all(axis=1)
    assert changed.sum() == 80
    if fault == "null_burst":
        positions = np.flatnonzero(changed.to_numpy())
        assert positions[-1] - positions[0] == 79  # one contiguous burst
        assert faulty.loc[changed, ["user_id", "device", "bid_price"]].isna().all().all()


def test_schema_faults(clean: pd.DataFrame):
    assert "site_id" not in generator.inject(clean, "schema_drop", DAY).columns
    renamed = generator.inject(clean, "schema_rename", DAY)
    assert "bid_price_usd" in renamed.columns and "bid_price" not in renamed.columns
    assert generator.inject(clean, "schema_type", DAY)["bid_price"].dtype == "string"


def test_label_shift_and_empty(clean: pd.DataFrame):
    assert generator.inject(clean, "label_shift", DAY)[schema.LABEL].mean() > 0.2
    assert len(generator.inject(clean, "empty", DAY)) == 0


def test_truncated_file_cannot_be_read():
    data = generator.partition_bytes(DAY, fault="truncated", rows=500)
    with pytest.raises(Exception):  # noqa: B017 - any pyarrow error: the point is that it is unreadable
        pq.read_table(io.BytesIO(data))


def test_unknown_fault_and_bad_date_are_explained():
    with pytest.raises(ValueError, match="choose one of: null_burst"):
        generator.inject(generator.generate(DAY, rows=10), "gremlins", DAY)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        generator.parse_day("01/03/2024")


def test_land_writes_the_partition_layout_and_keeps_an_existing_one(tmp_path: Path):
    landed = generator.land(DAY, str(tmp_path), rows=300)
    assert landed.uri == str(tmp_path / f"dt={DAY}" / "impressions.parquet")
    assert landed.written and landed.rows == 300
    again = generator.land(DAY, str(tmp_path), rows=300, fault="null_burst")
    assert not again.written
    assert Path(landed.uri).read_bytes() == generator.partition_bytes(DAY, rows=300)
    replaced = generator.land(DAY, str(tmp_path), rows=300, fault="null_burst", replace=True)
    assert replaced.written
    assert Path(landed.uri).read_bytes() == generator.partition_bytes(DAY, rows=300, fault="null_burst")


def test_land_cli(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "tollgate.data.land", "--date", DAY, "--fault", "out_of_range",
         "--rows", "200", "--landing", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    landed = json.loads(result.stdout)
    assert landed["fault"] == "out_of_range" and landed["rows"] == 200
    assert Path(landed["uri"]).is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "tollgate.data.land", "--date", DAY, "--fault", "nope"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_traffic_after_a_window_is_the_next_day_with_new_users_and_the_same_click_model():
    """The replay's newer rows: the next day, NEW_USER_SHARE of them from users no window held (ids above
    the population's, still in the schema's range); the other columns as that day's clean partition."""
    window = pd.concat([generator.generate(d, rows=ROWS) for d in (DAY, "2024-03-02")])
    newer = generator.traffic_after("2024-03-02", rows=ROWS)
    plain = generator.generate("2024-03-03", rows=ROWS)
    assert newer[schema.TIMESTAMP].min() >= pd.Timestamp("2024-03-03", tz="UTC")
    others = [c for c in plain.columns if c not in ("user_id", "user_ctr_7d", schema.LABEL)]
    pd.testing.assert_frame_equal(newer[others], plain[others])
    new = newer["user_id"] > window["user_id"].max()
    assert abs(new.mean() - generator.NEW_USER_SHARE) < 0.03
    assert (newer.loc[~new, "user_id"] == plain.loc[~new, "user_id"]).all()
    low, high = schema.VALUE_RANGES["user_id"]
    assert newer["user_id"].between(low, high).all() and newer["user_ctr_7d"].between(0, 1).all()
    # the same click model: new users' clicks follow their user_ctr_7d as everyone's do
    for frame in (newer[new], newer[~new]):
        assert 0.01 < frame[schema.LABEL].mean() < 0.06
        heavy = frame["user_ctr_7d"] > frame["user_ctr_7d"].median()
        assert frame.loc[heavy, schema.LABEL].mean() > frame.loc[~heavy, schema.LABEL].mean()
    assert generator.generate("2024-03-03", rows=ROWS, new_user_share=0.0).equals(plain)
