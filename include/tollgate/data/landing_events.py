"""Which landed partitions an object-storage notification announces (pure functions, no I/O).

S3 sends an ``ObjectCreated`` notification to SQS for each object written to the landing bucket (directly,
or wrapped in an SNS envelope when the bucket notifies a topic). A partition file is
``<prefix>dt=YYYY-MM-DD/impressions.parquet``; everything else on the queue - S3's ``s3:TestEvent``, another
prefix, another file in a partition folder (``_SUCCESS``), a delete, a body that is not JSON at all - is
ignored with a reason, so it is logged and never becomes an ingest run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import unquote_plus

from tollgate.data.schema import LANDING_FILE

_PARTITION_KEY = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})/" + re.escape(LANDING_FILE) + r"$")


@dataclass
class Announcement:
    """The partitions one queue message announces, and why the rest of it was ignored."""

    partitions: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def partition_of(key: str, prefix: str) -> str | None:
    """``YYYY-MM-DD`` of a landing partition file's object key under ``prefix``, else None."""
    if not key.startswith(prefix):
        return None
    match = _PARTITION_KEY.match(key[len(prefix) :])
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1)).isoformat()
    except ValueError:  # dt=2024-02-30
        return None


def _records(body: Any) -> list[Any] | None:
    """The S3 event records of a message body (unwrapping SNS), None when it is not an S3 notification."""
    if isinstance(body, dict) and body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        try:
            body = json.loads(body["Message"])
        except ValueError:
            return None
    if isinstance(body, dict) and isinstance(body.get("Records"), list):
        return body["Records"]
    return None


def announcement(body: str, prefix: str, bucket: str | None = None) -> Announcement:
    """Parse one SQS message body. Never raises: anything unexpected is an ignored reason."""
    result = Announcement()
    try:
        payload = json.loads(body)
    except (TypeError, ValueError):
        result.ignored.append(f"not JSON: {str(body)[:120]!r}")
        return result
    if isinstance(payload, dict) and payload.get("Event") == "s3:TestEvent":
        result.ignored.append("S3 test event (sent once when the notification is configured)")
        return result
    records = _records(payload)
    if records is None:
        result.ignored.append(f"not an S3 event notification: {str(body)[:120]!r}")
        return result
    for record in records:
        try:
            event = str(record["eventName"])
            record_bucket = str(record["s3"]["bucket"]["name"])
            key = unquote_plus(str(record["s3"]["object"]["key"]))  # S3 URL-encodes keys in events
        except (KeyError, TypeError):
            result.ignored.append(f"malformed S3 record: {str(record)[:120]!r}")
            continue
        if not event.startswith("ObjectCreated:"):
            result.ignored.append(f"{event} of s3://{record_bucket}/{key}: not a new object")
        elif bucket and record_bucket != bucket:
            result.ignored.append(f"s3://{record_bucket}/{key}: not the landing bucket {bucket}")
        elif (day := partition_of(key, prefix)) is None:
            result.ignored.append(
                f"s3://{record_bucket}/{key}: not a partition file {prefix}dt=YYYY-MM-DD/{LANDING_FILE}"
            )
        else:
            result.keys.append(f"s3://{record_bucket}/{key}")
            if day not in result.partitions:
                result.partitions.append(day)
    return result


def from_watcher(extra: dict[str, Any]) -> dict[str, Any]:
    """An asset event's extra as the ingest reads it: a watcher's event carries the trigger's payload
    (``{"from_trigger": true, "payload": {"partitions": [...]}}``); a REST event is used as it is."""
    payload = extra.get("payload")
    if extra.get("from_trigger") and isinstance(payload, dict):
        return payload
    return extra
