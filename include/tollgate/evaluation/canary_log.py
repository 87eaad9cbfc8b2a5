"""The router's prediction log and labels feed, adapted once to the names the canary analysis reads.

One way only: router log (``tollgate.serving.predlog``) → ``canary_schema`` columns. The rules:

- a row with no arm (no model was served: 503) or a refused input (422) is not part of the comparison;
- ``status`` is ``ok`` only for an HTTP 200 answered by the arm itself; a canary that failed and was
  answered by the champion (``fallback``) is a challenger error, as are 5xx answers;
- outputs are parsed from the JSON text the router stored; a one-row request's ``[value]`` becomes the
  value (a float, or the class-probability list of a multiclass model); multi-row requests carry no
  per-row label, so their outputs are left out (null) of the quality checks;
- a shadow output counts only when the mirrored call succeeded (``shadow_status == "ok"``);
- labels count only once matured: ``available_at <= as_of`` (the replay writes when they "arrive").
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tollgate.evaluation import canary_schema as col

if TYPE_CHECKING:
    import pandas as pd

ROUTER_COLUMNS = (
    "request_id", "ts", "rollout_id", "arm", "served_version", "served_output", "latency_ms", "status",
    "fallback", "rows", "shadow_version", "shadow_output", "shadow_latency_ms", "shadow_status",
)  # fmt: skip


def _one_row_output(text: Any, rows: Any) -> Any:
    if text is None or (isinstance(text, float) and text != text):
        return None
    value = json.loads(text)
    if isinstance(value, list) and len(value) == 1 and (rows is None or rows != rows or int(rows) == 1):
        return value[0]
    return None


def from_router_log(log: pd.DataFrame, rollout_id: str | None = None) -> pd.DataFrame:
    """The router's prediction log in ``canary_schema`` names (optionally one rollout's rows only)."""
    import pandas as pd

    missing = [c for c in ROUTER_COLUMNS if c not in log.columns]
    if missing:
        raise ValueError(
            f"not a router prediction log: columns {missing} are missing (expected the fields of "
            "tollgate.serving.predlog.FIELDS, as read by predlog.read_log)"
        )
    rows = log[log["arm"].isin([col.CHAMPION, col.CHALLENGER]) & (log["status"] != 422)]
    if rollout_id is not None:
        rows = rows[rows["rollout_id"] == rollout_id]
    fallback = rows["fallback"].fillna(False).astype(bool)
    ok = (rows["status"] == 200) & ~fallback
    shadow_ok = rows["shadow_status"] == "ok"
    out = pd.DataFrame(
        {
            col.REQUEST_ID: rows["request_id"].astype(str),
            col.TIMESTAMP: rows["ts"],
            col.ROLLOUT_ID: rows["rollout_id"],
            col.ARM: rows["arm"],
            col.SERVED_VERSION: rows["served_version"],
            col.SHADOW_VERSION: rows["shadow_version"].where(rows["shadow_version"].notna(), None),
            col.SERVED_OUTPUT: [
                _one_row_output(t, n) if good else None
                for t, n, good in zip(rows["served_output"], rows["rows"], ok, strict=True)
            ],
            col.SHADOW_OUTPUT: [
                _one_row_output(t, n) if good else None
                for t, n, good in zip(rows["shadow_output"], rows["rows"], shadow_ok, strict=True)
            ],
            col.LATENCY_MS: rows["latency_ms"].astype(float),
            col.SHADOW_LATENCY_MS: rows["shadow_latency_ms"].astype(float),
            col.STATUS: ["ok" if good else "error" for good in ok],
        }
    )
    return out.reset_index(drop=True)


def matured_labels(feed: pd.DataFrame, as_of: float) -> pd.DataFrame:
    """``request_id``/``label`` rows of the labels feed already available at ``as_of`` (epoch seconds);
    a request labelled twice keeps its latest label."""
    import pandas as pd

    missing = [c for c in ("request_id", "label", "available_at") if c not in feed.columns]
    if missing:
        raise ValueError(
            f"not a labels feed: columns {missing} are missing (written by tollgate.serving.replay)"
        )
    available = pd.to_datetime(feed["available_at"], utc=True)
    ready = feed[available <= pd.Timestamp(as_of, unit="s", tz="UTC")]
    ready = ready.assign(_at=available[ready.index]).sort_values("_at")
    ready = ready.drop_duplicates("request_id", keep="last")
    return pd.DataFrame({col.REQUEST_ID: ready["request_id"].astype(str), col.LABEL: ready["label"]})


def read_labels_feed(storage_root: str) -> pd.DataFrame:
    """Every labels file under ``<storage_root>/labels/`` (empty frame when none were written)."""
    import pandas as pd
    import pyarrow.parquet as pq

    from tollgate import storage

    fs, path = storage.filesystem(storage.join(storage_root, "labels"))
    empty = pd.DataFrame(columns=["request_id", "label", "available_at"])
    if not fs.exists(path):
        return empty
    files = sorted(f for f in fs.find(path) if f.endswith(".parquet"))
    frames = [pq.read_table(f, filesystem=fs).to_pandas() for f in files]
    return pd.concat(frames, ignore_index=True) if frames else empty


def load_for_analysis(
    storage_root: str, rollout_id: str, as_of: float, since: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(log, labels) of one rollout, in canary_schema names, ready for ``canary_verdict``; ``since``
    (epoch seconds) keeps only requests of the current stage."""
    import pandas as pd

    from tollgate.serving.predlog import read_log

    log = from_router_log(read_log(storage_root), rollout_id)
    if since is not None:
        log = log[log[col.TIMESTAMP] >= pd.Timestamp(since, unit="s", tz="UTC")].reset_index(drop=True)
    return log, matured_labels(read_labels_feed(storage_root), as_of)
