"""Alias moves and decision records on the model version: promote, reject, roll back.

``champion`` is moved with a single alias update, so a reader always finds a champion; the version
it pointed at keeps the ``previous`` alias. Every decision is written as tags on the version itself,
so the record stays with the model wherever it is looked at.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tollgate.registry.names import CHALLENGER, CHAMPION, PREVIOUS

if TYPE_CHECKING:
    from mlflow import MlflowClient

TAG_DECISION = "tollgate.approval.decision"
TAG_DECIDED_BY = "tollgate.approval.by"
TAG_DECIDED_AT = "tollgate.approval.at"
TAG_COMMENT = "tollgate.approval.comment"
TAG_EVIDENCE_SHA256 = "tollgate.approval.evidence_sha256"
TAG_REJECTED = "tollgate.rejected"
TAG_REJECTION_REASONS = "tollgate.rejection_reasons"
TAG_ROLLBACK = "tollgate.rollback"


def evidence_digest(evidence: dict[str, Any]) -> str:
    """sha256 of the evidence as canonical JSON: what the approver saw, pinned on the version."""
    return hashlib.sha256(json.dumps(evidence, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class DecisionRecord:
    decision: str  # "approved" | "rejected"
    decided_by: str  # a user name, or "tollgate-gates" / "timeout" when no human decided
    comment: str
    evidence_sha256: str
    decided_at: str = ""

    def __post_init__(self) -> None:
        self.decided_at = self.decided_at or datetime.now(UTC).isoformat(timespec="seconds")

    def tags(self) -> dict[str, str]:
        return {
            TAG_DECISION: self.decision,
            TAG_DECIDED_BY: self.decided_by,
            TAG_DECIDED_AT: self.decided_at,
            TAG_COMMENT: self.comment[:4000],
            TAG_EVIDENCE_SHA256: self.evidence_sha256,
        }


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _set_tags(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def promote(client: MlflowClient, name: str, version: str, record: DecisionRecord) -> dict[str, str | None]:
    """Make ``version`` the champion; the old champion becomes ``previous``. Idempotent."""
    version = str(version)
    old = alias_version(client, name, CHAMPION)
    _set_tags(client, name, version, record.tags())
    if old != version:
        if old is not None:
            client.set_registered_model_alias(name, PREVIOUS, old)
        client.set_registered_model_alias(name, CHAMPION, version)  # one update: never without a champion
    if alias_version(client, name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    return {"champion": version, "previous": old if old != version else alias_version(client, name, PREVIOUS)}


def reject(
    client: MlflowClient, name: str, version: str, reasons: list[str], record: DecisionRecord
) -> dict[str, Any]:
    """Tag ``version`` rejected with the reasons and take its ``challenger`` alias; champion untouched."""
    version = str(version)
    _set_tags(
        client,
        name,
        version,
        {**record.tags(), TAG_REJECTED: "true", TAG_REJECTION_REASONS: "; ".join(reasons)[:4000]},
    )
    if alias_version(client, name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    return {"rejected": version, "reasons": reasons, "champion": alias_version(client, name, CHAMPION)}


@dataclass
class RollbackRecord:
    from_version: str | None
    to_version: str
    requested_by: str
    reason: str
    at: str
    request_id: str = ""  # the Airflow run that asked: a retry of the same request is not a second rollback

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def rollback(
    client: MlflowClient, name: str, target_version: str, requested_by: str, reason: str, request_id: str = ""
) -> RollbackRecord:
    """Point ``champion`` at ``target_version`` (already verified by the caller); the replaced
    champion becomes ``previous``.

    The record goes on both versions *before* any alias moves, so a retry after a crash part-way
    (same ``request_id``) finds it and finishes the same rollback instead of failing."""
    target_version = str(target_version)
    current = alias_version(client, name, CHAMPION)
    done = client.get_model_version(name, target_version).tags.get(TAG_ROLLBACK)
    earlier = RollbackRecord(**json.loads(done)) if done else None
    if current == target_version:
        if request_id and earlier and earlier.request_id == request_id:
            _finish_rollback(client, name, earlier)  # this request already moved champion: finish it
            return earlier
        raise ValueError(f"version {target_version} of {name} is already the champion: nothing to roll back")
    if request_id and earlier and earlier.request_id == request_id and earlier.from_version == current:
        record = earlier  # a retry before the move: same record
    else:
        record = RollbackRecord(
            from_version=current,
            to_version=target_version,
            requested_by=requested_by,
            reason=reason,
            at=datetime.now(UTC).isoformat(timespec="seconds"),
            request_id=request_id,
        )
    client.set_model_version_tag(name, target_version, TAG_ROLLBACK, record.to_json())
    if current is not None:
        client.set_model_version_tag(name, current, TAG_ROLLBACK, record.to_json())
    client.set_registered_model_alias(name, CHAMPION, target_version)
    _finish_rollback(client, name, record)
    return record


def _finish_rollback(client: MlflowClient, name: str, record: RollbackRecord) -> None:
    if record.from_version is not None and alias_version(client, name, PREVIOUS) != record.from_version:
        client.set_registered_model_alias(name, PREVIOUS, record.from_version)
