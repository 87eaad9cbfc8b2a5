"""Small synthetic click logs following ``tollgate.data.schema``, with a learnable signal.

For tests and benchmarks of the trainer only; the project's data comes from
``tollgate.data`` (generator, validation, DVC versions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tollgate.data import schema


def make_events(n_rows: int, seed: int = 0, start: str = "2025-01-01", days: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, days * 86_400, n_rows))
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(seconds, unit="s")
    user = rng.integers(1, 500, n_rows)
    campaign = rng.integers(1, 40, n_rows)
    site = rng.integers(1, 60, n_rows)
    device = rng.choice(np.array(schema.DEVICES), n_rows, p=[0.6, 0.3, 0.1])
    country = rng.choice(np.array(schema.COUNTRIES), n_rows)
    position = rng.integers(1, 6, n_rows)
    bid = np.round(rng.lognormal(0.5, 0.8, n_rows).clip(0.01, 50), 4)
    user_ctr = rng.beta(2, 20, n_rows)
    depth = rng.integers(1, 51, n_rows)
    hour = ts.hour.to_numpy()
    logit = (
        -2.2
        + 6.0 * (user_ctr - 0.09)
        - 0.35 * (position - 1)
        + 0.5 * (device == "mobile")
        + 0.35 * np.log(bid)
        + 0.6 * ((campaign % 5) == 0)
        - 0.4 * ((site % 7) == 0)
        + 0.3 * np.sin(hour / 24 * 2 * np.pi)
    )
    clicked = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame(
        {
            "event_id": [f"ev-{seed}-{i:07d}" for i in range(n_rows)],
            "event_ts": ts,
            "user_id": user,
            "campaign_id": campaign,
            "site_id": site,
            "device": device,
            "country": country,
            "hour_of_day": hour.astype(np.int64),
            "ad_position": position,
            "bid_price": bid,
            "user_ctr_7d": user_ctr,
            "page_depth": depth,
            "clicked": clicked,
        }
    )
    return frame.astype(schema.COLUMNS)


def write_parquet(path, n_rows: int, seed: int = 0) -> str:
    frame = make_events(n_rows, seed)
    frame.to_parquet(path, index=False)
    return str(path)
