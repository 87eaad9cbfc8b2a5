"""The prediction log: one row per request, as Parquet under
``<storage_root>/predictions/dt=YYYY-MM-DD/hour=HH/`` (local folder or S3, through the storage layer).

The request path only appends a dict to a list; a background thread writes a new immutable file every
few seconds, and ``close`` writes whatever is left (called on SIGTERM after the server drained), so
nothing logged is lost. Outputs are stored as JSON text, exactly as the pyfunc returned them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from tollgate import storage

FIELDS = (
    ("request_id", "string"),
    ("ts", "timestamp"),
    ("replica", "string"),
    ("model_name", "string"),
    ("rollout_id", "string"),
    ("arm", "string"),
    ("served_version", "string"),
    ("served_signature_sha256", "string"),
    ("served_output", "string"),
    ("latency_ms", "float64"),  # the whole handler, from the request's arrival to its response
    ("model_ms", "float64"),  # of which the model's own predict: latency_ms - model_ms is the router's share
    ("status", "int64"),
    ("error", "string"),
    ("fallback", "bool"),
    ("features_sha256", "string"),
    ("request_key", "string"),
    ("rows", "int64"),
    ("shadow_version", "string"),
    ("shadow_output", "string"),
    ("shadow_latency_ms", "float64"),
    ("shadow_status", "string"),
)


def _schema():
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "float64": pa.float64(),
        "int64": pa.int64(),
        "bool": pa.bool_(),
    }
    return pa.schema([(name, types[kind]) for name, kind in FIELDS])


# Private row keys the request path fills with raw objects; the writer thread turns them into the
# ``features_sha256`` and ``served_output`` columns, so hashing and serialising stay off the response path.
FEATURES = "_features"
SERVED = "_served"


def finish_row(row: dict[str, Any]) -> None:
    """Fill the columns the request path left to the writer: the features hash and the served output."""
    if FEATURES in row:
        features = row.pop(FEATURES)
        row["features_sha256"] = hashlib.sha256(
            json.dumps(features, sort_keys=True, default=str).encode()
        ).hexdigest()
    if SERVED in row:
        row["served_output"] = json.dumps(row.pop(SERVED), default=str)


def partition(ts: float) -> tuple[str, str]:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H")


class PredictionLog:
    def __init__(self, storage_root: str, flush_s: float = 5.0, on_rows=None):
        self.root = storage.join(storage_root, "predictions")
        self.flush_s = flush_s
        self.replica = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._seq = 0
        self._stop = threading.Event()
        self._on_rows = on_rows
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.files: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def append(self, row: dict[str, Any]) -> None:
        row["replica"] = self.replica
        with self._lock:
            self._rows.append(row)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> int:
        """Write the rows gathered so far, one file per hour partition; returns the rows written."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._write_lock:
            groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                finish_row(row)
                groups[partition(row["ts"])].append(row)
            for (day, hour), group in groups.items():
                columns = {name: [r.get(name) for r in group] for name, _ in FIELDS}
                columns["ts"] = [datetime.fromtimestamp(t, UTC) for t in columns["ts"]]
                table = pa.table(columns, schema=_schema())
                buffer = io.BytesIO()
                pq.write_table(table, buffer)
                self._seq += 1
                uri = storage.join(
                    self.root, f"dt={day}", f"hour={hour}", f"part-{self.replica}-{self._seq:06d}.parquet"
                )
                storage.put_new(uri, buffer.getvalue())
                self.files.append(uri)
        if self._on_rows:
            self._on_rows(len(rows))
        return len(rows)

    def close(self) -> int:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.flush_s + 30)
        return self.flush()


def read_log(storage_root: str) -> Any:
    """Every row logged under ``storage_root`` as a pandas DataFrame (for tests, analysis, replay)."""
    import pandas as pd
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(storage.join(storage_root, "predictions"))
    if not fs.exists(path):
        return pd.DataFrame(columns=[name for name, _ in FIELDS])
    files = sorted(f for f in fs.find(path) if f.endswith(".parquet"))
    frames = [pq.read_table(f, filesystem=fs).to_pandas() for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[n for n, _ in FIELDS])
