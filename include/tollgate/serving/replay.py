"""``python -m tollgate.serving.replay``: send rows of a dataset version to a local router as traffic,
and write the labels that "arrive later" to a labels feed, so analysis joins delayed labels by request id.

Loopback only (it refuses any other host), and bounded: at most ``--max-requests`` requests and
``--max-seconds`` seconds, at ``--rate`` requests per second. The features sent are the columns the
router's champion takes (read from ``/status``), so any model works; the label column is named by
``--label-column``. Labels go to ``<storage_root>/labels/dt=YYYY-MM-DD/part-<replay id>.parquet`` with
``available_at`` = send time + ``--label-delay-seconds``: a reader only trusts labels already available.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from tollgate import storage

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HARD_MAX_REQUESTS = 100_000
HARD_MAX_SECONDS = 3600.0


class ReplayError(ValueError):
    """A replay that must not run as asked; the message names the option and the fix."""


@dataclass
class ReplayResult:
    replay_id: str
    sent: int = 0
    ok: int = 0
    failed: int = 0
    variants: dict[str, int] = field(default_factory=dict)
    labels_uri: str | None = None
    seconds: float = 0.0


def check_target(url: str) -> str:
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ReplayError(
            f"--url {url}: replay only sends to a router on this machine (127.0.0.1, localhost, ::1); "
            "it is a test-traffic tool, not a load generator for remote services"
        )
    return url.rstrip("/")


def read_dataset(data_file: str | None, repo: str | None, rev: str | None, path: str) -> Any:
    import pandas as pd

    if data_file:
        return pd.read_parquet(data_file)
    if not (repo and rev):
        raise ReplayError("pass --data-file, or --data-repo and --data-rev (a dataset version)")
    from tollgate.training.dataset import read_bytes_from_dvc

    return pd.read_parquet(io.BytesIO(read_bytes_from_dvc(repo, rev, path)))


def feature_columns(status: dict[str, Any], frame: Any) -> list[str]:
    spec = status.get("input") or {}
    columns = [c["name"] for c in spec.get("columns") or []]
    if not columns:
        raise ReplayError("the router serves no champion with a column signature: nothing to replay against")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ReplayError(f"the dataset lacks the model's input columns {missing}")
    return columns


def _json_value(value: Any) -> Any:
    import pandas as pd

    from tollgate.serving.outputs import _scalar

    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is None or (isinstance(value, float) and value != value):
        return None
    return _scalar(value)


def write_labels(storage_root: str, replay_id: str, labels: list[dict[str, Any]]) -> str | None:
    if not labels:
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    table = pa.table(
        {
            "request_id": [x["request_id"] for x in labels],
            "request_key": [x["request_key"] for x in labels],
            "label": [x["label"] for x in labels],
            "sent_at": [datetime.fromtimestamp(x["sent_at"], UTC) for x in labels],
            "available_at": [datetime.fromtimestamp(x["available_at"], UTC) for x in labels],
            "replay_id": [replay_id] * len(labels),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    uri = storage.join(storage_root, "labels", f"dt={day}", f"part-{replay_id}.parquet")
    storage.put_new(uri, buffer.getvalue())
    return uri


def replay(
    url: str,
    frame: Any,
    *,
    storage_root: str,
    rate: float = 20.0,
    max_requests: int = 1000,
    max_seconds: float = 60.0,
    label_column: str | None = None,
    key_column: str | None = None,
    label_delay_s: float = 0.0,
) -> ReplayResult:
    import requests

    url = check_target(url)
    if not 0 < max_requests <= HARD_MAX_REQUESTS:
        raise ReplayError(f"--max-requests must be 1..{HARD_MAX_REQUESTS}, got {max_requests}")
    if not 0 < max_seconds <= HARD_MAX_SECONDS:
        raise ReplayError(f"--max-seconds must be in (0, {HARD_MAX_SECONDS:.0f}], got {max_seconds}")
    if not 0 < rate <= 2000:
        raise ReplayError(f"--rate must be in (0, 2000] requests per second, got {rate}")
    if label_column and label_column not in frame.columns:
        raise ReplayError(f"--label-column {label_column!r} is not a column of the dataset")
    session = requests.Session()
    columns = feature_columns(session.get(f"{url}/status", timeout=10).json(), frame)
    result = ReplayResult(replay_id=f"replay-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}")
    labels: list[dict[str, Any]] = []
    start = time.monotonic()
    for i, row in enumerate(frame.head(max_requests).to_dict(orient="records")):
        due = start + i / rate
        if due - start > max_seconds:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        request_id = f"{result.replay_id}-{i}"
        body: dict[str, Any] = {"rows": [{c: _json_value(row[c]) for c in columns}]}
        key = str(_json_value(row[key_column])) if key_column and key_column in row else request_id
        if key_column and key_column in row:
            body["user_id"] = key
        sent_at = time.time()
        try:
            answer = session.post(
                f"{url}/predict", json=body, headers={"x-request-id": request_id}, timeout=30
            )
        except requests.RequestException:
            result.failed += 1
            continue
        result.sent += 1
        if answer.status_code == 200:
            result.ok += 1
            variant = answer.headers.get("x-tollgate-variant", "?")
            result.variants[variant] = result.variants.get(variant, 0) + 1
            if label_column:
                labels.append(
                    {
                        "request_id": request_id,
                        "request_key": key,
                        "label": _json_value(row[label_column]),
                        "sent_at": sent_at,
                        "available_at": sent_at + label_delay_s,
                    }
                )
        else:
            result.failed += 1
    result.seconds = time.monotonic() - start
    result.labels_uri = write_labels(storage_root, result.replay_id, labels)
    return result


def main(argv: list[str] | None = None) -> int:
    from tollgate.config import default_for

    parser = argparse.ArgumentParser(
        prog="python -m tollgate.serving.replay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the router (loopback only)")
    parser.add_argument("--data-file", help="a parquet file of rows")
    parser.add_argument("--data-repo", help="git + DVC data repository (with --data-rev)")
    parser.add_argument("--data-rev", help="dataset version (git tag or commit)")
    parser.add_argument("--data-path", default="data/ctr_curated.parquet", help="path inside the data repo")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--max-requests", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--label-column", help="the column whose value arrives later as the label")
    parser.add_argument("--key-column", help="sticky key column sent as user_id (e.g. user_id)")
    parser.add_argument("--label-delay-seconds", type=float, default=0.0)
    parser.add_argument("--storage-root", default=None, help="where the labels feed goes")
    args = parser.parse_args(argv)
    try:
        frame = read_dataset(args.data_file, args.data_repo, args.data_rev, args.data_path)
        result = replay(
            args.url,
            frame,
            storage_root=args.storage_root or default_for("tollgate_storage_root"),
            rate=args.rate,
            max_requests=args.max_requests,
            max_seconds=args.max_seconds,
            label_column=args.label_column,
            key_column=args.key_column,
            label_delay_s=args.label_delay_seconds,
        )
    except ReplayError as err:
        print(f"replay refused: {err}", file=sys.stderr)
        return 2
    print(
        f"{result.replay_id}: sent {result.sent} ({result.ok} ok, {result.failed} failed) in "
        f"{result.seconds:.1f} s; arms {result.variants}; labels {result.labels_uri or 'none'}"
    )
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
