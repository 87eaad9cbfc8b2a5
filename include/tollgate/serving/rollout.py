"""The rollout state: one versioned record in object storage that every router process polls.

Admin calls and guardrail aborts write it; each write bumps ``revision`` and names who wrote it, so all
replicas converge on the same state and a restarted one resumes it. A rollout carries a lease its owner
(the DAG) renews; a router that sees an expired lease aborts the rollout itself, so a run killed by hand
never leaves a canary running. Writes are read-check-write on ``revision`` (a stale writer gets a
Conflict); object stores without conditional writes make this best effort across simultaneous writers,
which is enough here: every writer moves toward "off".
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from tollgate.storage import Folder, join

MODES = ("off", "shadow", "canary")
MAX_WEIGHT_BP = 10_000
RECORD = "rollout.json"


class RolloutError(ValueError):
    """An admin request that cannot be applied; the message says which field and why."""


class Conflict(RolloutError):
    """The record changed since the writer read it."""


@dataclass(frozen=True)
class Rollout:
    revision: int = 0
    rollout_id: str = ""
    mode: str = "off"
    challenger_version: str | None = None
    weight_bp: int = 0
    lease_expires_at: float = 0.0  # epoch seconds; 0 when no rollout runs
    owner: str = ""
    aborted_reason: str | None = None
    updated_at: float = 0.0
    updated_by: str = ""

    @property
    def active(self) -> bool:
        return self.mode != "off" and self.challenger_version is not None

    def lease_expired(self, now: float | None = None) -> bool:
        return self.active and (now or time.time()) > self.lease_expires_at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rollout:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def validate(mode: Any, challenger_version: Any, weight_bp: Any, rollout_id: Any) -> None:
    if mode not in MODES:
        raise RolloutError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "off" and not (
        isinstance(challenger_version, str | int) and str(challenger_version).isdigit()
    ):
        raise RolloutError(f"challenger_version must be a model version number, got {challenger_version!r}")
    if not isinstance(weight_bp, int) or isinstance(weight_bp, bool) or not 0 <= weight_bp <= MAX_WEIGHT_BP:
        raise RolloutError(
            f"weight_bp must be an integer from 0 to {MAX_WEIGHT_BP} (basis points), got {weight_bp!r}"
        )
    if mode == "shadow" and weight_bp:
        raise RolloutError("weight_bp must be 0 in shadow mode (the challenger answers no user)")
    if mode != "off" and (not isinstance(rollout_id, str) or not rollout_id.strip()):
        raise RolloutError("rollout_id is required: it keys the sticky assignment of users to arms")


def bucket(rollout_id: str, key: str) -> int:
    """A stable 0..9999 bucket of (rollout id, request key): the same user lands in the same bucket in
    every process and at every weight, so raising the weight only moves users into the canary."""
    digest = hashlib.blake2b(f"{rollout_id}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % MAX_WEIGHT_BP


def in_canary(rollout: Rollout, key: str) -> bool:
    return (
        rollout.mode == "canary"
        and rollout.weight_bp > 0
        and bucket(rollout.rollout_id, key) < rollout.weight_bp
    )


class RolloutStore:
    """The record of one registered model under ``<storage_root>/serving/<model>/rollout.json``."""

    def __init__(self, storage_root: str, model_name: str):
        self.folder = Folder(join(storage_root, "serving", model_name))

    def read(self) -> Rollout:
        if not self.folder.exists(RECORD):
            return Rollout()
        return Rollout.from_dict(json.loads(self.folder.read(RECORD)))

    def write(self, new: Rollout, expected_revision: int | None, by: str) -> Rollout:
        current = self.read()
        if expected_revision is not None and current.revision != expected_revision:
            raise Conflict(
                f"the rollout record is at revision {current.revision}, not {expected_revision}: "
                "read it again and retry"
            )
        record = replace(new, revision=current.revision + 1, updated_at=time.time(), updated_by=by)
        self.folder.write(RECORD, json.dumps(record.to_dict(), sort_keys=True).encode())
        return record

    def abort(self, reason: str, by: str, expected_revision: int | None = None) -> Rollout:
        """Weight 0, challenger unloaded, reason recorded (the rollout id stays for the record)."""
        current = self.read()
        aborted = replace(
            current,
            mode="off",
            weight_bp=0,
            challenger_version=None,
            lease_expires_at=0.0,
            aborted_reason=reason,
        )
        return self.write(aborted, current.revision if expected_revision is None else expected_revision, by)
