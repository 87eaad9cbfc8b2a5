"""A realistic upstream source: one day of ad-impression events for a click-through model.

Deterministic per (date, seed). Clicks follow a logistic model of the user's latent propensity
(seen noisily through ``user_ctr_7d``), ad slot, device, hour, bid and campaign/site quality, so a
model can learn them (AUC around 0.75); campaign quality drifts slowly with the day of the year.
``traffic_after`` is the traffic that arrives after a dataset's window, for the local replay: the next
day's rows, a share ``NEW_USER_SHARE`` of them from users who never appeared before (ids above the
population's; same click model), a drift the training window never showed. On request a fault is
injected into an otherwise clean partition (see ``FAULTS``); the clean rows of a faulty partition are
the same rows as the clean partition of that day.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from tollgate import storage
from tollgate.data import schema

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DEFAULT_SEED = 7
DEFAULT_ROWS = 20_000
TARGET_CTR = 0.03

N_USERS = 50_000
N_CAMPAIGNS = 120
N_SITES = 400

# fault kind -> what it does to the partition (and what the gate should make of it)
FAULTS: dict[str, str] = {
    "null_burst": "a contiguous burst of rows with user_id, device and bid_price missing (row-level)",
    "out_of_range": "rows outside their value range or allowed set, or stamped on another day (row-level)",
    "duplicate_ids": "rows replayed with an event_id already in the partition (row-level)",
    "schema_drop": "the site_id column is missing (batch-level)",
    "schema_rename": "bid_price is renamed bid_price_usd (batch-level)",
    "schema_type": "bid_price arrives as text instead of a number (batch-level)",
    "label_shift": "the click rate jumps to about 25 % (batch-level)",
    "empty": "a valid Parquet file with no rows (batch-level)",
    "truncated": "the Parquet file is cut off half way and cannot be read (batch-level)",
}
ROW_LEVEL_FAULTS = ("null_burst", "out_of_range", "duplicate_ids")

_POSITION_EFFECT = (0.9, 0.45, 0.0, -0.45, -0.9)
_POSITION_PROBS = (0.3, 0.25, 0.2, 0.15, 0.1)
_DEVICE_PROBS = (0.6, 0.3, 0.1)
_DEVICE_EFFECT = (0.35, -0.2, 0.0)
_COUNTRY_PROBS = (0.35, 0.12, 0.1, 0.08, 0.15, 0.08, 0.07, 0.05)
# The traffic after a dataset's window: this share of its rows comes from new users (a user-acquisition
# campaign), ids N_USERS+1..N_USERS+N_NEW_USERS that no dataset before held. Their propensities come from
# the same distribution and their user_ctr_7d from their first days, so the click model is unchanged: a
# model that leans on user_ctr_7d stays calibrated there, a model wrong for unseen users does not.
NEW_USER_SHARE = 0.5
N_NEW_USERS = 20_000


@dataclass(frozen=True)
class LandedPartition:
    uri: str
    day: str
    rows: int
    fault: str | None
    written: bool


def parse_day(value: str | date) -> date:
    """A partition day from ``YYYY-MM-DD`` (clear error otherwise)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(
            f"Partition {value!r} is not a date; use the form YYYY-MM-DD, e.g. 2024-01-31."
        ) from None


def partition_uri(landing_uri: str, day: str | date) -> str:
    """Where the partition of ``day`` lands: ``<landing>/dt=YYYY-MM-DD/<the dataset's landing file>``."""
    from tollgate.data.suite import active_dataset

    landing_file = active_dataset().schema.landing_file
    return storage.join(landing_uri, f"dt={parse_day(day).isoformat()}", landing_file)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    import numpy as np

    return np.random.default_rng([seed, *keys])


def _population(seed: int) -> dict[str, np.ndarray]:
    """Users, campaigns and sites: fixed per seed, shared by every day."""
    rng = _rng(seed, 0)
    return {
        "user_propensity": rng.beta(1.5, 40.0, N_USERS),
        "user_weight": rng.zipf(1.6, N_USERS).clip(max=200).astype(float),
        "campaign_quality": rng.normal(0.0, 0.5, (2, N_CAMPAIGNS)),
        "site_quality": rng.normal(0.0, 0.3, N_SITES),
        "country_effect": rng.normal(0.0, 0.15, len(schema.COUNTRIES)),
    }


def generate(
    day: str | date, rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED, new_user_share: float = 0.0
) -> pd.DataFrame:
    """The clean partition of ``day`` with the schema's columns and dtypes, sorted by time.

    ``new_user_share`` of the rows come from new users (see ``NEW_USER_SHARE``), drawn from a random stream
    of their own: columns other than user_id, user_ctr_7d and clicked stay as without them (0: none)."""
    import numpy as np
    import pandas as pd

    day = parse_day(day)
    pop = _population(seed)
    rng = _rng(seed, 1, day.toordinal())
    n = int(rows)

    # The user's last-7-days CTR: a noisy view of their latent propensity, refreshed daily.
    impressions_7d = rng.poisson(60, N_USERS) + 1
    clicks_7d = rng.binomial(impressions_7d, pop["user_propensity"])
    user_ctr_7d = clicks_7d / impressions_7d

    users = rng.choice(N_USERS, n, p=pop["user_weight"] / pop["user_weight"].sum())
    campaigns = rng.integers(0, N_CAMPAIGNS, n)
    sites = rng.integers(0, N_SITES, n)
    position = rng.choice(5, n, p=_POSITION_PROBS)
    device = rng.choice(3, n, p=_DEVICE_PROBS)
    country = rng.choice(len(schema.COUNTRIES), n, p=_COUNTRY_PROBS)
    hour_weights = 1.0 + 0.6 * np.sin(2 * np.pi * (np.arange(24) - 8) / 24)
    hour = rng.choice(24, n, p=hour_weights / hour_weights.sum())
    micros = hour.astype(np.int64) * 3_600_000_000 + rng.integers(0, 3_600_000_000, n)
    bid = np.exp(rng.normal(0.0, 0.8, n)).clip(0.01, 50.0).round(4)
    depth = (rng.geometric(0.15, n)).clip(1, 50)

    # Campaign quality rotates slowly over the year: the signal drifts, a model must keep up.
    angle = 2 * np.pi * day.timetuple().tm_yday / 365.0
    campaign_effect = np.cos(angle) * pop["campaign_quality"][0] + np.sin(angle) * pop["campaign_quality"][1]
    p_user = pop["user_propensity"][users]
    user_ids, row_ctr_7d = users + 1, user_ctr_7d[users]
    if new_user_share > 0:  # new users: the same propensity distribution, seen over their first days
        fresh = _rng(seed, 3, day.toordinal())
        newcomer = fresh.random(n) < new_user_share
        k = int(newcomer.sum())
        p_user = p_user.copy()
        p_user[newcomer] = fresh.beta(1.5, 40.0, k)
        seen = fresh.poisson(10, k) + 1
        row_ctr_7d = row_ctr_7d.copy()
        row_ctr_7d[newcomer] = fresh.binomial(seen, p_user[newcomer]) / seen
        user_ids = user_ids.copy()
        user_ids[newcomer] = N_USERS + 1 + fresh.integers(0, N_NEW_USERS, k)
    logit = (
        np.log(p_user / (1 - p_user))
        + np.asarray(_POSITION_EFFECT)[position]
        + np.asarray(_DEVICE_EFFECT)[device]
        + pop["country_effect"][country]
        + 0.3 * np.sin(2 * np.pi * (hour - 14) / 24)
        + 0.25 * np.log(bid)
        - 0.02 * (depth - 1)
        + campaign_effect[campaigns]
        + pop["site_quality"][sites]
    )
    # Calibrate the intercept so the day's expected click rate is TARGET_CTR.
    lo, hi = -10.0, 10.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if (1 / (1 + np.exp(-(logit + mid)))).mean() > TARGET_CTR:
            hi = mid
        else:
            lo = mid
    clicked = (rng.random(n) < 1 / (1 + np.exp(-(logit + lo)))).astype(np.int64)

    order = np.argsort(micros, kind="stable")
    start = pd.Timestamp(datetime(day.year, day.month, day.day, tzinfo=UTC)).as_unit("us")
    stamp = day.strftime("%Y%m%d")
    frame = pd.DataFrame(
        {
            "event_id": [f"imp-{stamp}-{i:08d}" for i in range(n)],
            "event_ts": start + pd.to_timedelta(micros[order], unit="us"),
            "user_id": user_ids[order],
            "campaign_id": campaigns[order] + 1,
            "site_id": sites[order] + 1,
            "device": np.asarray(schema.DEVICES, dtype=object)[device[order]],
            "country": np.asarray(schema.COUNTRIES, dtype=object)[country[order]],
            "hour_of_day": hour[order],
            "ad_position": position[order] + 1,
            "bid_price": bid[order],
            "user_ctr_7d": row_ctr_7d[order].round(5),
            "page_depth": depth[order],
            "clicked": clicked[order],
        }
    )
    return frame.astype(schema.COLUMNS)


def traffic_after(last_day: str | date, rows: int, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """Rows newer than a dataset whose newest day is ``last_day``: the next day's traffic, a share
    ``NEW_USER_SHARE`` of it from new users (see ``generate``). For the local replay of the rollout stages."""
    return generate(
        parse_day(last_day) + timedelta(days=1), rows=rows, seed=seed, new_user_share=NEW_USER_SHARE
    )


def fault_names() -> list[str]:
    """The faults the active example's simulated upstream can inject (plus the file-level truncation)."""
    from tollgate.data.suite import active_dataset

    return sorted({*active_dataset().faults, "truncated"})


def inject(frame: pd.DataFrame, fault: str, day: str | date, seed: int = DEFAULT_SEED, share: float = 0.02):
    """``frame`` with ``fault`` injected (a new frame; ``truncated`` is a file-level fault, see ``land``)."""
    import numpy as np
    import pandas as pd

    if fault not in FAULTS:
        raise ValueError(f"Unknown fault {fault!r}; choose one of: {', '.join(FAULTS)}.")
    day = parse_day(day)
    rng = _rng(seed, 2, day.toordinal(), zlib.crc32(fault.encode()))
    df = frame.copy()
    n = len(df)
    k = max(1, round(n * share)) if n else 0
    if fault == "null_burst":
        start = int(rng.integers(0, max(1, n - k)))
        rows = df.index[start : start + k]
        df["user_id"] = df["user_id"].astype("Int64")  # nullable, as a Parquet int column with gaps
        for column in ("user_id", "device", "bid_price"):
            df.loc[rows, column] = np.nan if column == "bid_price" else pd.NA
        return df
    if fault == "out_of_range":
        rows = rng.choice(n, k, replace=False)
        kinds = rng.integers(0, 6, k)
        for row, kind in zip(rows, kinds, strict=True):
            label = df.index[row]
            if kind == 0:
                df.loc[label, "bid_price"] = float(rng.choice([-1.0, 500.0]))
            elif kind == 1:
                df.loc[label, "hour_of_day"] = 24
            elif kind == 2:
                df.loc[label, "country"] = "ZZ"
            elif kind == 3:
                df.loc[label, "user_ctr_7d"] = 1.7
            elif kind == 4:
                df.loc[label, "event_ts"] = df.loc[label, "event_ts"] + pd.Timedelta(days=1)
            else:
                df.loc[label, "ad_position"] = 9
        return df
    if fault == "duplicate_ids":
        replayed = df.iloc[np.sort(rng.choice(n, k, replace=False))]
        return pd.concat([df, replayed], ignore_index=True)
    if fault == "schema_drop":
        return df.drop(columns=["site_id"])
    if fault == "schema_rename":
        return df.rename(columns={"bid_price": "bid_price_usd"})
    if fault == "schema_type":
        return df.assign(bid_price=df["bid_price"].map(lambda v: f"{v:.4f}").astype("string"))
    if fault == "label_shift":
        flip = rng.random(n) < 0.23
        return df.assign(clicked=np.where(flip, 1, df["clicked"]).astype("int64"))
    if fault == "empty":
        return df.iloc[0:0]
    return df  # truncated: the rows are fine, the file is not


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Parquet bytes of ``frame`` (no index); deterministic for the same frame and pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue()


def partition_bytes(
    day: str | date,
    fault: str | None = None,
    rows: int = DEFAULT_ROWS,
    seed: int = DEFAULT_SEED,
    share: float = 0.02,
) -> bytes:
    """The landed file of ``day`` as bytes from the active example's simulated upstream, with ``fault``
    injected when given (``truncated``, a file cut in half, works for every dataset)."""
    from tollgate.data.suite import active_dataset

    dataset = active_dataset()
    if fault and fault != "truncated" and fault not in dataset.faults:
        raise ValueError(f"Unknown fault {fault!r}; choose one of: {', '.join(fault_names())}.")
    frame = dataset.generate(
        parse_day(day), rows, seed, fault=None if fault == "truncated" else fault, share=share
    )
    data = to_parquet_bytes(frame)
    if fault == "truncated":
        data = data[: len(data) // 2]
    return data


def land(
    day: str | date,
    landing_uri: str,
    fault: str | None = None,
    rows: int = DEFAULT_ROWS,
    seed: int = DEFAULT_SEED,
    share: float = 0.02,
    replace: bool = False,
) -> LandedPartition:
    """Write the partition of ``day`` into the landing area, as the upstream system would.

    An existing partition is kept (``written=False``) unless ``replace`` is set: then it is a
    re-delivery, and the ingest treats the new bytes as a new input (nothing downstream is lost).
    """
    day = parse_day(day)
    uri = partition_uri(landing_uri, day)
    data = partition_bytes(day, fault=fault, rows=rows, seed=seed, share=share)
    landed_rows = _count_rows(data, fault)
    if storage.exists(uri):
        if not replace:
            return LandedPartition(uri, day.isoformat(), _stored_rows(uri), None, written=False)
        # The landing area belongs to the upstream system: a re-delivery replaces its file there.
        fs, path = storage.filesystem(uri)
        fs.pipe_file(path, data)
    else:
        storage.put_new(uri, data)
    return LandedPartition(uri, day.isoformat(), landed_rows, fault, written=True)


def _count_rows(data: bytes, fault: str | None) -> int:
    import pyarrow.parquet as pq

    if fault == "truncated":
        return -1
    return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows


def _stored_rows(uri: str) -> int:
    try:
        return _count_rows(storage.read_bytes(uri), None)
    except Exception:  # an unreadable file already there (e.g. a truncated one)
        return -1


def interval_start(day: str | date) -> datetime:
    day = parse_day(day)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def interval_end(day: str | date) -> datetime:
    return interval_start(day) + timedelta(days=1)
