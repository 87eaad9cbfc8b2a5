"""Checkpoint store of one training run: atomic blobs, a manifest with sha256, keep-last-K, fallback.

Layout under the checkpoint URI::

    ckpt-00000150.pt     torch.save of the training state at step 150
    manifest.json        {"attempt": N, "checkpoints": [{name, step, epoch, sha256, size, created_at}, ...]}
    progress.json        ledger of attempts (resume point, highest step reached, save/restore seconds)
    fence.json           {"attempt": N, ...}: the attempt that owns the folder (the newest one started)

A checkpoint counts only once the manifest lists it, and the manifest is written after the blob, so
a crash at any moment leaves the previous manifest and its checkpoints valid. On resume the newest
listed checkpoint whose bytes match its sha256 (and that loads) wins; a corrupt one is reported and
skipped in favour of the one before it.

Fencing: each attempt claims the folder with its attempt number before it restores. Every later write
(checkpoint blob, manifest, ledger) first checks, under the folder's writer lock, that no newer attempt
has claimed it or written the manifest; an older attempt still running somewhere (a stale pod on a node
that lost contact) is refused with :class:`StaleAttempt` and writes nothing. On S3 the check and the write
are two requests: the launcher's clean-up of earlier pods is what keeps that window closed there.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

try:  # torch >= 2.6 can skip the archive's per-record CRC32
    from torch.utils.serialization import config as serialization_config
except ImportError:  # older torch (the package allows 2.1): every record keeps its CRC32
    serialization_config = None

from tollgate_torch import StaleAttempt
from tollgate_torch.folder import Folder

MANIFEST = "manifest.json"
LEDGER = "progress.json"
FENCE = "fence.json"
# Where a save can be interrupted on purpose (write_hook): half the blob in its temp file; the blob
# complete under its name but not yet in the manifest.
WRITE_STAGES = ("blob-half-written", "blob-written")


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.pt"


def serialize(state: dict[str, Any]) -> bytes:
    """``torch.save`` to bytes, without the archive's CRC32 of each record: the manifest's sha256 of the
    whole blob already checks every byte on restore. The CRC pass is CPU work the background writer did
    in many short turns of the GIL, each one taken from the training loop (a 1.8 MB state serialised
    beside a busy Python thread took 77 ms with it, 31 ms without)."""
    buffer = io.BytesIO()
    no_crc32 = (
        serialization_config.patch("save.compute_crc32", False)
        if serialization_config is not None
        else contextlib.nullcontext()
    )
    with no_crc32:
        torch.save(state, buffer)
    return buffer.getvalue()


def deserialize(payload: bytes) -> dict[str, Any]:
    # weights_only: the state holds only tensors and plain Python values, so no pickle code runs.
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class Entry:
    name: str
    step: int
    epoch: int
    sha256: str
    size: int
    created_at: float

    @classmethod
    def from_dict(cls, data: dict) -> Entry:
        return cls(
            name=str(data["name"]),
            step=int(data["step"]),
            epoch=int(data["epoch"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            created_at=float(data.get("created_at", 0.0)),
        )


@dataclass(frozen=True)
class Restored:
    entry: Entry
    state: dict[str, Any]
    seconds: float
    skipped: list[str]  # newer checkpoints that failed verification, with the reason


def _log(message: str) -> None:
    print(f"[tollgate_torch.checkpoints] {message}", file=sys.stderr, flush=True)


class CheckpointStore:
    """``attempt``: the writer's attempt number (fencing token); None writes unfenced (tools, benchmarks)."""

    def __init__(self, uri: str, keep: int = 3, attempt: int | None = None) -> None:
        self.uri = uri
        self.keep = keep
        self.attempt = attempt
        self.storage = Folder(uri)
        # Test point: called as (entry, stage) at WRITE_STAGES of each save, so a test can kill there.
        self.write_hook: Callable[[Entry, str], None] | None = None

    # -- fencing ----------------------------------------------------------------------------------
    def owner(self) -> int | None:
        """The newest attempt that claimed the folder or wrote its manifest (None: never claimed)."""
        numbers = []
        for name in (FENCE, MANIFEST):
            if self.storage.exists(name):
                try:
                    number = json.loads(self.storage.read(name)).get("attempt")
                except (ValueError, AttributeError):
                    continue
                if number is not None:
                    numbers.append(int(number))
        return max(numbers, default=None)

    def claim(self, attempt: int) -> None:
        """Make ``attempt`` the owner; refuse when a newer attempt already owns the folder."""
        with self.storage.locked():
            owner = self.owner()
            if owner is not None and owner > attempt:
                raise self._stale(attempt, owner, "claim the checkpoint folder")
            self.attempt = attempt
            if owner != attempt:
                body = {"attempt": attempt, "claimed_at": time.time(), "host": socket.gethostname(),
                        "pid": os.getpid()}  # fmt: skip
                self.storage.write(FENCE, json.dumps(body).encode())

    def check_owner(self, what: str) -> None:
        """Raise StaleAttempt when a newer attempt owns the folder (call inside ``storage.locked()``)."""
        if self.attempt is None:
            return
        owner = self.owner()
        if owner is not None and owner > self.attempt:
            raise self._stale(self.attempt, owner, what)

    def _stale(self, attempt: int, owner: int, what: str) -> StaleAttempt:
        return StaleAttempt(
            f"attempt {attempt} may not {what}: attempt {owner} of this training run has taken over "
            f"{self.uri}. This attempt is stale (an earlier pod or process still running) and stops without "
            "writing; the newer attempt owns the checkpoints."
        )

    # -- manifest ---------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """Listed checkpoints, oldest first. An unreadable manifest is reported and treated as empty."""
        if not self.storage.exists(MANIFEST):
            return []
        try:
            data = json.loads(self.storage.read(MANIFEST))
            return sorted((Entry.from_dict(e) for e in data["checkpoints"]), key=lambda e: e.step)
        except (ValueError, KeyError, TypeError) as exc:
            _log(f"manifest {self.uri}/{MANIFEST} is unreadable ({exc}); no checkpoint can be trusted")
            return []

    def _write_manifest(self, entries: list[Entry]) -> None:
        body = {"version": 1, "attempt": self.attempt, "checkpoints": [e.__dict__ for e in entries]}
        self.storage.write(MANIFEST, json.dumps(body, indent=2).encode())

    # -- save -------------------------------------------------------------------------------------
    def save(self, state: dict[str, Any], step: int, epoch: int) -> tuple[Entry, float]:
        """Write the checkpoint, then the manifest listing it, then drop checkpoints beyond K."""
        started = time.perf_counter()
        payload = serialize(state)
        entry = Entry(
            name=checkpoint_name(step),
            step=step,
            epoch=epoch,
            sha256=hashlib.sha256(payload).hexdigest(),
            size=len(payload),
            created_at=time.time(),
        )
        hook = self.write_hook
        with self.storage.locked():
            self.check_owner(f"write checkpoint {entry.name}")
            midway = (lambda: hook(entry, "blob-half-written")) if hook is not None else None
            self.storage.write(entry.name, payload, midway=midway)
            if hook is not None:
                hook(entry, "blob-written")  # the blob is in place, the manifest does not list it yet
            entries = [e for e in self.entries() if e.step < step] + [entry]
            kept, dropped = entries[-self.keep :], entries[: -self.keep]
            self._write_manifest(kept)
            listed = {e.name for e in kept}
            for old in dropped:
                if old.name not in listed:
                    self.storage.delete(old.name)
        return entry, time.perf_counter() - started

    # -- restore ----------------------------------------------------------------------------------
    def verify(self, entry: Entry) -> tuple[bytes | None, str]:
        """(payload, "") when the blob matches the manifest, else (None, reason)."""
        try:
            payload = self.storage.read(entry.name)
        except FileNotFoundError:
            return None, "file is missing"
        if len(payload) != entry.size:
            return None, f"size {len(payload)} bytes, manifest says {entry.size} (truncated?)"
        digest = hashlib.sha256(payload).hexdigest()
        if digest != entry.sha256:
            return None, f"sha256 {digest[:12]}… does not match manifest {entry.sha256[:12]}… (corrupt)"
        return payload, ""

    def restore_latest(self) -> Restored | None:
        """The newest checkpoint that verifies and loads; None when there is none (fresh start)."""
        started = time.perf_counter()
        removed = self.storage.remove_stale_temps()
        if removed:
            _log(f"removed {len(removed)} partial write(s) left by a killed attempt: {', '.join(removed)}")
        skipped: list[str] = []
        for entry in reversed(self.entries()):
            payload, reason = self.verify(entry)
            if payload is not None:
                try:
                    state = deserialize(payload)
                except Exception as exc:  # verified bytes that do not load: written by a broken writer
                    payload, reason = None, f"does not load ({type(exc).__name__}: {exc})"
            if payload is None:
                skipped.append(f"{entry.name}: {reason}")
                _log(
                    f"checkpoint {entry.name} (step {entry.step}) failed verification: {reason}; "
                    "falling back to the previous checkpoint"
                )
                continue
            if skipped:
                _log(f"resuming from {entry.name} (step {entry.step}) after skipping {len(skipped)}")
            return Restored(entry, state, time.perf_counter() - started, skipped)
        if skipped:
            _log("no checkpoint verifies: starting from scratch")
        return None

    # -- attempt ledger ---------------------------------------------------------------------------
    def read_ledger(self) -> dict[str, Any]:
        if not self.storage.exists(LEDGER):
            return {"attempts": []}
        try:
            return json.loads(self.storage.read(LEDGER))
        except ValueError as exc:
            _log(f"attempt ledger {LEDGER} is unreadable ({exc}); starting a new one")
            return {"attempts": []}

    def write_ledger(self, ledger: dict[str, Any], durable: bool = True) -> None:
        with self.storage.locked():
            self.check_owner(f"write the attempt ledger {LEDGER}")
            self.storage.write(LEDGER, json.dumps(ledger, indent=2).encode(), durable=durable)

    # -- per-step heartbeat (local folders only) --------------------------------------------------
    def heartbeat_path(self, attempt_index: int) -> Path | None:
        if self.storage.local_root is None:
            return None
        return self.storage.local_root / f"heartbeat-{attempt_index:04d}.step"

    def open_heartbeat(self, attempt_index: int) -> Heartbeat | None:
        path = self.heartbeat_path(attempt_index)
        return Heartbeat(path) if path is not None else None

    def read_heartbeat(self, attempt_index: int) -> int | None:
        path = self.heartbeat_path(attempt_index)
        try:
            return int(path.read_bytes().strip() or 0) if path is not None else None
        except (FileNotFoundError, ValueError):
            return None


class Heartbeat:
    """The highest step an attempt reached, overwritten in place after every step.

    One fixed-width ``pwrite`` (microseconds; a SIGKILL cannot tear it) instead of rewriting the
    ledger, whose atomic replace costs milliseconds per step on some file systems. It only feeds
    the lost-work figure (steps_redone) when an attempt dies without a word.
    """

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)

    def beat(self, step: int) -> None:
        os.pwrite(self.fd, b"%012d" % step, 0)

    def close(self) -> None:
        os.close(self.fd)
