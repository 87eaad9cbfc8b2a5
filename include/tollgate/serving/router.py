"""The router's state and control loop: which models serve, how a request picks its arm, and how the
routing table changes (hot reload, rollout record, lease, guardrail).

All that changes lives in one immutable ``RoutingTable`` swapped by reference; a request reads
``router.table`` once and uses that table to the end, so a reload never shows it half an update and
in-flight requests finish on the old models. Every change (verify → load → warm up → swap) runs in a
worker thread under one asyncio lock; the request path takes no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tollgate.registry import names
from tollgate.serving.guardrail import Guardrail
from tollgate.serving.loader import LoadedModel, Refused, load_version, prune_cache
from tollgate.serving.metrics import RouterMetrics
from tollgate.serving.predlog import PredictionLog
from tollgate.serving.rollout import Conflict, Rollout, RolloutStore
from tollgate.serving.settings import RouterSettings
from tollgate.serving.shadow import ShadowMirror

log = logging.getLogger("tollgate.serving")
TICK_S = 0.25  # guardrail and lease checks; well inside the 5 s the guardrail promises


@dataclass(frozen=True)
class RoutingTable:
    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None
    rollout: Rollout = field(default_factory=Rollout)

    @property
    def paths(self) -> frozenset[Path]:
        return frozenset(m.path for m in (self.champion, self.challenger) if m is not None)


class Router:
    def __init__(self, settings: RouterSettings, client: Any = None):
        from tollgate.registry.keys import load_trusted_keys, resolve_trusted_keys

        self.settings = settings
        self.metrics = RouterMetrics()
        self.table = RoutingTable()
        self.not_ready_reason = "starting: the champion is being resolved and verified"
        self.refused: dict[str, dict[str, Any]] = {}  # role -> the last refusal
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self.trusted_keys = resolve_trusted_keys(settings.trusted_keys)
        self.decision_keys = load_trusted_keys(settings.decision_keys)
        self.store = RolloutStore(settings.storage_root, settings.model_name)
        self.log = PredictionLog(
            settings.storage_root, settings.log_flush_s, on_rows=self.metrics.log_rows.inc
        )
        self.shadow = ShadowMirror(
            settings.shadow_queue_size,
            self.log.append,
            self.metrics,
            batch_size=settings.shadow_batch_size,
            linger_s=settings.shadow_linger_s,
            idle_priority=settings.shadow_idle_priority,
            cpus=settings.shadow_cpus,
        )
        self.guardrail = Guardrail(settings.guardrail)
        self._client = client
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task | None = None
        self._refused_keys: set[tuple[str, str, int]] = set()  # (role, version, tags hash) not retried
        self._previous_paths: frozenset[Path] = frozenset()  # the models of the table before the last swap
        self._heap_frozen = False

    # ---- lifecycle -------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            from tollgate.registry.client import mlflow_client

            self._client = mlflow_client(self.settings.tracking_uri)
        return self._client

    async def start(self) -> None:
        self._lock = asyncio.Lock()
        self.log.start()
        self.shadow.start()
        self._task = asyncio.create_task(self._control_loop(), name="router-control")

    async def stop(self) -> None:
        """After the server drained: stop polling, finish shadow work, flush the log (nothing lost)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.shadow.close)
        written = await asyncio.to_thread(self.log.close)
        log.info("router stopped: prediction log flushed (%d rows in the last write)", written)

    def event(self, kind: str, **details: Any) -> None:
        self.events.append({"at": time.time(), "event": kind, **details})

    # ---- the control loop ------------------------------------------------------------------------
    async def _control_loop(self) -> None:
        next_alias = next_rollout = 0.0
        while True:
            now = time.monotonic()
            try:
                if now >= next_rollout:
                    next_rollout = now + self.settings.rollout_poll_s
                    record = await asyncio.to_thread(self.store.read)
                    if record.revision != self.table.rollout.revision:
                        await self.apply_rollout(record)
                if now >= next_alias:
                    next_alias = now + self.settings.alias_poll_s
                    await self.refresh_champion()
                await self._check_rollout_health()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # MLflow or storage unreachable: keep serving, say so, retry
                log.warning("router control loop: %s: %s", type(err).__name__, err)
                self.event("control_error", error=f"{type(err).__name__}: {err}"[:500])
            await asyncio.sleep(TICK_S)

    async def _check_rollout_health(self) -> None:
        rollout = self.table.rollout
        if not rollout.active:
            return
        if rollout.lease_expired():
            await self.abort(
                f"lease expired at {time.strftime('%H:%M:%S', time.gmtime(rollout.lease_expires_at))} UTC: "
                f"its owner {rollout.owner or '(unnamed)'} stopped renewing it",
                cause="lease",
            )
            return
        if rollout.mode == "canary":
            reason = self.guardrail.breach()
            if reason:
                await self.abort(reason, cause="guardrail")

    # ---- champion ------------------------------------------------------------------------------
    async def refresh_champion(self, force: bool = False) -> None:
        """Follow the champion alias: verify → load → warm up → swap when it points at a new version."""
        assert self._lock is not None
        async with self._lock:
            from tollgate.registry.verify import resolve_version

            current = self.table.champion
            found = await asyncio.to_thread(
                resolve_version, self.client, self.settings.model_name, names.CHAMPION
            )
            if found is None:
                if current is None:
                    self.not_ready_reason = (
                        f"no champion: model {self.settings.model_name!r} has no version with alias "
                        f"{names.CHAMPION!r} in MLflow ({self.settings.tracking_uri})"
                    )
                return
            version = str(found.version)
            # A refused version is tried again only once its tags change (an approval recorded later).
            key = ("champion", version, hash(tuple(sorted(dict(found.tags).items()))))
            if current is not None and current.version == version and not force:
                return
            if key in self._refused_keys and not force:
                return
            try:
                model = await asyncio.to_thread(self._load, version, "champion")
            except Refused as refusal:
                self._refused_keys.add(key)
                self._note_refusal("champion", refusal)
                if current is None:
                    self.not_ready_reason = f"no verified champion: {refusal}"
                return
            self._swap(replace(self.table, champion=model))
            self._publish_model(model, previous=current)
            self.refused.pop("champion", None)
            self.metrics.ready.set(1)
            self.metrics.reloads.labels(outcome="champion").inc()
            self.event(
                "champion_loaded", version=model.version, previous=current.version if current else None
            )
            log.info(
                "serving champion %s v%s (signature sha256 %s, approved by %s)",
                model.name,
                model.version,
                model.signature_sha256,
                model.approved_by,
            )
            await self._prune()

    async def _prune(self) -> None:
        """Remove the verified copies no routing table needs, after a swap.

        Kept: the current table's models, the previous table's (a request that read the old table may
        still use them until the next swap) and the paths the shadow worker has queued work for. Called
        under the lock, so no load of this process is writing a copy meanwhile; the files are removed in
        a worker thread, never on the event loop."""
        keep = set(self.table.paths | self._previous_paths) | self.shadow.paths_in_flight()
        removed = await asyncio.to_thread(
            prune_cache, self.settings.model_cache, self.settings.model_name, keep
        )
        if removed:
            log.info("removed model copies no routing table uses: %s", ", ".join(p.name for p in removed))

    def _swap(self, table: RoutingTable) -> None:
        """Install ``table`` (one reference assignment); remember the models of the table it replaces."""
        previous, self.table = self.table, table
        if table.paths != previous.paths:
            self._previous_paths = previous.paths
        if table.champion is not None and not self._heap_frozen:
            # Everything imported and loaded so far (mlflow, pandas, pyarrow, the model: ~10^5 objects)
            # lives as long as the process. Frozen, a full collection no longer scans it: without this
            # a gen-2 collection stops every request for 0.1-0.2 s now and then.
            gc.freeze()
            self._heap_frozen = True

    def _load(self, version: str, role: str) -> LoadedModel:
        return load_version(
            self.client,
            self.settings.model_name,
            version,
            role=role,
            trusted_keys=self.trusted_keys,
            decision_keys=self.decision_keys,
            cache=self.settings.model_cache,
        )

    def _note_refusal(self, role: str, refusal: Refused) -> None:
        self.refused[role] = {"version": refusal.version, "problems": refusal.problems, "at": time.time()}
        self.metrics.refusals.labels(alias=role, version=refusal.version).inc()
        self.event("refused", role=role, version=refusal.version, problems=refusal.problems)
        log.warning("REFUSED %s %s; still serving the last good model", role, refusal)

    def _publish_model(self, model: LoadedModel, previous: LoadedModel | None) -> None:
        if previous is not None:
            with contextlib.suppress(KeyError):
                self.metrics.model_info.remove(
                    previous.role, previous.name, previous.version, previous.signature_sha256
                )
        self.metrics.model_info.labels(model.role, model.name, model.version, model.signature_sha256).set(1)

    # ---- rollout ---------------------------------------------------------------------------------
    async def apply_rollout(self, record: Rollout) -> Rollout:
        """Make this process serve ``record``: load (verify, warm) or unload the challenger, then swap."""
        assert self._lock is not None
        async with self._lock:
            table = self.table
            challenger = table.challenger
            wanted = record.challenger_version if record.active else None
            if wanted is None:
                challenger = None
            elif challenger is None or challenger.version != str(wanted):
                try:
                    challenger = await asyncio.to_thread(self._load, str(wanted), "challenger")
                except Refused as refusal:
                    self._note_refusal("challenger", refusal)
                    reason = f"challenger version {refusal.version} refused: " + "; ".join(refusal.problems)
                    record = await self._write_abort(reason, cause="refused")
                    challenger = None
            if (record.rollout_id, record.mode, record.challenger_version) != (
                table.rollout.rollout_id,
                table.rollout.mode,
                table.rollout.challenger_version,
            ):
                self.guardrail.reset()
            if table.challenger is not None and (challenger is None or challenger is not table.challenger):
                with contextlib.suppress(KeyError):
                    old = table.challenger
                    self.metrics.model_info.remove(old.role, old.name, old.version, old.signature_sha256)
            if challenger is not None and challenger is not table.challenger:
                self._publish_model(challenger, previous=None)
            self._swap(replace(table, challenger=challenger, rollout=record))
            self.metrics.reloads.labels(outcome="rollout").inc()
            self.event(
                "rollout_applied",
                revision=record.revision,
                mode=record.mode,
                weight_bp=record.weight_bp,
                challenger=record.challenger_version,
                aborted=record.aborted_reason,
            )
            await self._prune()
            return record

    async def _write_abort(self, reason: str, cause: str) -> Rollout:
        for _ in range(5):
            try:
                record = await asyncio.to_thread(self.store.abort, reason, f"router {self.log.replica}")
                break
            except Conflict:
                continue
        else:
            record = await asyncio.to_thread(self.store.read)
        self.metrics.aborts.labels(cause=cause).inc()
        self.event("rollout_aborted", cause=cause, reason=reason)
        log.warning("rollout ABORTED (%s): %s", cause, reason)
        return record

    async def abort(self, reason: str, cause: str) -> Rollout:
        record = await self._write_abort(reason, cause)
        return await self.apply_rollout(record)

    # ---- reporting -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        table = self.table
        return {
            "model_name": self.settings.model_name,
            "ready": table.champion is not None,
            "reason": None if table.champion is not None else self.not_ready_reason,
            "variants": {
                "champion": table.champion.describe() if table.champion else None,
                "challenger": table.challenger.describe() if table.challenger else None,
            },
            "input": table.champion.spec.describe() if table.champion else None,
            "rollout": table.rollout.to_dict(),
            "refused": self.refused,
            "shadow": {
                "queue_depth": self.shadow.depth,
                "dropped": self.shadow.dropped,
                "worker_cpus": self.shadow.worker_cpus(),
            },
            "replica": self.log.replica,
            "events": list(self.events)[-20:],
        }
