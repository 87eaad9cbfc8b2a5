"""The training run: load data, resume from the newest valid checkpoint, train, evaluate, publish.

Exactness: everything that influences the weights is either a pure function of (seed, data, step)
— init, the per-epoch shuffling, the LR schedule — or saved in the checkpoint — parameters,
optimizer and scheduler state, RNG states, the running epoch loss. Deterministic kernels and one
intra-op thread make the arithmetic repeat bit for bit, so an attempt resumed from step k recomputes
steps k+1.. exactly as the interrupted one did.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tollgate.data import schema
from tollgate.storage import Folder
from tollgate.training import dataset as datasets
from tollgate.training.errors import BadInput, Preempted
from tollgate.training.features import FeatureEncoder
from tollgate.training.metrics import evaluate
from tollgate.training.model import CTRModel, ModelConfig
from tollgate.training.settings import (
    MISCALIBRATED_LOGIT_SHIFT,
    SLOW_SERVING_DELAY_MS,
    TrainSettings,
)
from tollgate.training.tracking import MlflowTracker, NullTracker, OpeningTracker, open_tracker
from tollgate_torch.background import BackgroundSaver
from tollgate_torch.checkpoints import WRITE_STAGES, CheckpointStore, Entry
from tollgate_torch.preemption import PreemptionGuard
from tollgate_torch.state import STATE_FORMAT, capture_rng, epoch_permutation, restore_rng

EVAL_BATCH = 8192
# Seconds to sleep after each step: only for tests and demos that inject an interruption at a
# given step of a tiny dataset (real training never sets it).
STEP_DELAY_ENV = "TOLLGATE_STEP_DELAY_SECONDS"
# Tests only: after this step (and its checkpoint, if one is due) print TOLLGATE_PAUSED and stop the
# process (SIGSTOP), so a test can kill it, or let a newer attempt take over, at an exact point.
PAUSE_AFTER_STEP_ENV = "TOLLGATE_PAUSE_AFTER_STEP"
# Tests only: "<step>:<stage>" stops the process (TOLLGATE_PAUSED, SIGSTOP) while the background worker
# writes that step's checkpoint, at a stage of tollgate_torch.checkpoints.WRITE_STAGES.
PAUSE_DURING_SAVE_ENV = "TOLLGATE_PAUSE_DURING_SAVE"


def configure_determinism() -> torch.device:
    """Deterministic kernels, one intra-op thread; CUDA when present (needs CUBLAS_WORKSPACE_CONFIG)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms() also imports torch._inductor (dynamo, sympy: seconds of
    # start-up at every attempt) only to set the compiler's flag; we never compile, so set the
    # kernel flag directly when this torch has it.
    if hasattr(torch._C, "_set_deterministic_algorithms"):
        torch._C._set_deterministic_algorithms(True)
    else:  # pragma: no cover - other torch versions
        torch.use_deterministic_algorithms(True)
    assert torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = False
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _pause_during_save_hook():
    """The PAUSE_DURING_SAVE_ENV test point as a CheckpointStore.write_hook (None when unset)."""
    given = os.environ.get(PAUSE_DURING_SAVE_ENV)
    if not given:
        return None
    step_text, _, stage = given.partition(":")
    if stage not in WRITE_STAGES:
        raise BadInput(f"{PAUSE_DURING_SAVE_ENV}={given!r}: use <step>:<stage>, stage one of {WRITE_STAGES}")
    step = int(step_text)

    def hook(entry: Entry, at: str) -> None:
        if entry.step == step and at == stage:
            say(f"TOLLGATE_PAUSED step={step}")
            os.kill(os.getpid(), signal.SIGSTOP)

    return hook


def say(line: str) -> None:
    """A machine-readable progress line on stdout (the launcher parses these)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def log(message: str) -> None:
    print(f"[tollgate.training] {message}", file=sys.stderr, flush=True)


@dataclass
class Progress:
    """Where the run stands; read by the entrypoint when it has to report a preemption."""

    step: int = 0
    last_checkpoint: str | None = None
    save_seconds: float = 0.0
    restore_seconds: float = 0.0
    preempted_reported: bool = False
    # Where this attempt's start went, in seconds (TOLLGATE_TIMINGS): imports, data, prepare, restore.
    timings: dict[str, float] = field(default_factory=dict)
    attempt: dict[str, Any] = field(default_factory=dict)


class Trainer:
    def __init__(self, settings: TrainSettings, guard: PreemptionGuard) -> None:
        self.s = settings
        self.guard = guard
        self.progress = Progress()
        self.tracker: MlflowTracker | NullTracker | OpeningTracker = NullTracker()
        self.store = CheckpointStore(settings.checkpoint_uri, settings.keep_checkpoints)
        self.store.write_hook = _pause_during_save_hook()
        self.saver = BackgroundSaver(self.store)
        self.ledger: dict[str, Any] = {"attempts": []}
        self._ledger_written_at = 0.0
        self._heartbeat = None

    # -- set-up -----------------------------------------------------------------------------------
    def _prepare(self) -> None:
        s = self.s
        self.device = configure_determinism()
        started = time.perf_counter()
        frame, self.dataset = datasets.load(
            s.data_file, s.data_repo, s.data_rev, s.data_path, cache_dir=s.data_cache, log=log
        )
        self.frame = frame
        self.progress.timings["data"] = time.perf_counter() - started
        started = time.perf_counter()
        train, holdout = datasets.time_split(frame, s.holdout_fraction)
        labels = train[schema.LABEL].to_numpy(dtype=np.float32)
        if s.quality == "degraded":
            # Deliberately worse model (for gate demos): labels shuffled, so nothing real is learnt.
            labels = np.random.default_rng(s.seed).permutation(labels)
        self.encoder = FeatureEncoder.fit(train)
        # fault injection (quality=miscalibrated): where its outputs go wrong is fixed by the training split
        self.miscalibrated_above = float(train["user_id"].max())
        cat, num = self.encoder.transform(train)
        hcat, hnum = self.encoder.transform(holdout)
        dev = self.device
        self.x_cat, self.x_num = torch.from_numpy(cat).to(dev), torch.from_numpy(num).to(dev)
        self.y = torch.from_numpy(labels).to(dev)
        self.h_cat, self.h_num = torch.from_numpy(hcat).to(dev), torch.from_numpy(hnum).to(dev)
        self.h_y = holdout[schema.LABEL].to_numpy(dtype=np.int64)
        self.n_train, self.n_holdout = len(train), len(holdout)

        torch.manual_seed(s.seed)
        np.random.seed(s.seed % 2**32)
        random.seed(s.seed)
        self.model_config = ModelConfig(
            cardinalities=tuple(self.encoder.cardinalities),
            n_numeric=len(schema.NUMERIC_COLUMNS),
            embedding_dim=s.embedding_dim,
            hidden_units=s.hidden_units,
        )
        self.model = CTRModel(self.model_config).to(dev)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=s.lr)
        self.batches_per_epoch = math.ceil(self.n_train / s.batch_size)
        self.total_steps = self.batches_per_epoch * s.epochs
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=self.total_steps, eta_min=s.lr / 10
        )
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        self.fingerprint = {
            **s.hyperparameters(),
            "content_hash": self.dataset.content_hash,
            "train_rows": self.n_train,
        }
        # Position: the next batch to run is (epoch, batch); step counts finished optimizer steps.
        self.epoch, self.batch = 0, 0
        self.epoch_loss_sum, self.epoch_rows = 0.0, 0
        self.progress.timings["prepare"] = time.perf_counter() - started

    def _resume(self) -> str | None:
        restored = self.store.restore_latest()
        if restored is None:
            return None
        state = restored.state
        if state.get("fingerprint") != self.fingerprint:
            theirs = state.get("fingerprint") or {}
            diff = {k: (theirs.get(k), v) for k, v in self.fingerprint.items() if theirs.get(k) != v}
            raise BadInput(
                f"checkpoint folder {self.s.checkpoint_uri} belongs to a training run with other data or "
                f"hyperparameters (checkpoint vs now: {diff}). Resume with the original settings, or give "
                "this run a new --training-run-id and --checkpoint-uri."
            )
        started = time.perf_counter()
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self.progress.step = int(state["step"])
        self.epoch_loss_sum, self.epoch_rows = float(state["epoch_loss_sum"]), int(state["epoch_rows"])
        self.progress.restore_seconds = restored.seconds + (time.perf_counter() - started)
        self.progress.last_checkpoint = restored.entry.name
        self._last_saved_step = self.progress.step
        return restored.entry.name

    def _state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "step": self.progress.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_rows": self.epoch_rows,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(),
        }

    # -- ledger of attempts (for steps_redone and the spot report) ------------------------------
    def _claim_folder(self) -> None:
        """Own the checkpoint folder before reading it; from now on an older attempt's writes are refused."""
        given = self.s.airflow.get("TOLLGATE_ATTEMPT")
        self.store.claim(int(given) if given else len(self.store.read_ledger()["attempts"]) + 1)

    def _open_attempt(self, resumed_from: str | None) -> None:
        self.ledger = self.store.read_ledger()
        attempts = self.ledger["attempts"]
        for index, previous in enumerate(attempts):
            reached = self.store.read_heartbeat(index)
            if reached is not None:
                previous["highest_step"] = max(int(previous["highest_step"]), reached)
            if previous.get("outcome") == "running":
                previous["outcome"] = "killed"  # ended without a word: SIGKILL, node loss, OOM kill
        self.progress.attempt = {
            "attempt": self.store.attempt,
            "started_at": datetime.now(UTC).isoformat(),
            "resumed_from": resumed_from,
            "resumed_from_step": self.progress.step,
            "highest_step": self.progress.step,
            "save_seconds": 0.0,
            "restore_seconds": round(self.progress.restore_seconds, 6),
            "outcome": "running",
        }
        self._heartbeat = self.store.open_heartbeat(len(attempts))
        attempts.append(self.progress.attempt)
        self.store.write_ledger(self.ledger)

    def _touch_ledger(self, force: bool = False) -> None:
        """Record progress: a heartbeat every step (local), the ledger at checkpoints and exits.

        On S3, which has no cheap in-place write, the ledger is rewritten at most once a second.
        """
        attempt = self.progress.attempt
        attempt["highest_step"] = max(attempt["highest_step"], self.progress.step)
        attempt["save_seconds"] = round(self.progress.save_seconds, 6)
        if self._heartbeat is not None:
            self._heartbeat.beat(self.progress.step)
        now = time.monotonic()
        if force or (self._heartbeat is None and now - self._ledger_written_at >= 1.0):
            self.store.write_ledger(self.ledger, durable=force)
            self._ledger_written_at = now

    def _close_attempt(self, outcome: str) -> None:
        self.progress.attempt["outcome"] = outcome
        self._touch_ledger(force=True)

    def spot_summary(self) -> dict[str, Any]:
        attempts = self.ledger["attempts"]
        redone = 0
        for before, after in itertools.pairwise(attempts):
            redone += max(0, int(before["highest_step"]) - int(after["resumed_from_step"]))
        preempted = sum(1 for a in attempts[:-1] if a.get("outcome") in ("preempted", "killed"))
        env_preemptions = self.s.airflow.get("TOLLGATE_PREEMPTIONS")
        return {
            "attempts": len(attempts),
            "preemptions": int(env_preemptions) if env_preemptions else preempted,
            "steps_redone": redone,
            "checkpoint_save_seconds_total": round(sum(float(a["save_seconds"]) for a in attempts), 6),
            "checkpoint_restore_seconds_total": round(sum(float(a["restore_seconds"]) for a in attempts), 6),
        }

    # -- tracking -------------------------------------------------------------------------------
    def _open_tracking(self, resumed_from: str | None, resumed_step: int) -> MlflowTracker | NullTracker:
        """Find or create the MLflow run and log what this attempt adds (runs in OpeningTracker's thread)."""
        s = self.s
        try:
            tracker = open_tracker(s.mlflow_uri, s.experiment, s.training_run_id)
        except Exception as exc:
            raise RuntimeError(
                f"MLflow tracking server at {s.mlflow_uri} is not usable ({exc}). Start it, fix "
                "--mlflow-uri / MLFLOW_TRACKING_URI, or pass --mlflow-uri '' to train without tracking."
            ) from exc
        if isinstance(tracker, NullTracker):
            return tracker
        # Only what an earlier attempt has not logged (MLflow params are immutable).
        tracker.log_params(
            {
                **s.hyperparameters(),
                "checkpoint_every": s.checkpoint_every,
                "keep_checkpoints": s.keep_checkpoints,
                "grace_seconds": s.grace_seconds,
                "device": self.device.type,
                "train_rows": self.n_train,
                "holdout_rows": self.n_holdout,
                "total_steps": self.total_steps,
            }
        )
        tracker.log_dataset(self.frame, self.dataset.as_dict(), schema.LABEL)
        airflow = {
            "TOLLGATE_AIRFLOW_DAG_ID": "tollgate.airflow.dag_id",
            "TOLLGATE_AIRFLOW_RUN_ID": "tollgate.airflow.run_id",
            "TOLLGATE_AIRFLOW_TASK_ID": "tollgate.airflow.task_id",
            "TOLLGATE_AIRFLOW_TRY_NUMBER": "tollgate.airflow.try_number",
        }
        summary = self.spot_summary()
        tags = {tag: s.airflow[env] for env, tag in airflow.items() if env in s.airflow}
        tags.update(
            {
                "tollgate.attempt": self.progress.attempt["attempt"],
                "tollgate.preemptions": summary["preemptions"],
                "tollgate.resumed_from_checkpoint": resumed_from or "none",
                "tollgate.resumed_from_step": resumed_step,
                "tollgate.checkpoint_uri": s.checkpoint_uri,
                "tollgate.dataset.rev": self.dataset.rev or "none",
                "tollgate.dataset.repo": self.dataset.repo or "none",
                "tollgate.dataset.path": self.dataset.path,
                "tollgate.dataset.content_hash": self.dataset.content_hash,
                "tollgate.quality": s.quality,
            }
        )
        tracker.set_tags(tags)
        if resumed_from:
            tracker.log_metrics(resumed_step, {"checkpoint_restore_seconds": self.progress.restore_seconds})
        return tracker

    # -- checkpoints ----------------------------------------------------------------------------
    def _checkpoint(self, wait: bool = False) -> tuple[str, float]:
        """Snapshot now (unless this step is already saved) and persist it in the background.

        The loop is held up only for the snapshot and, when the previous save is still being written,
        for that one; ``wait`` also waits for this save to be committed (SIGTERM, the final state).
        ``checkpoint_save_seconds`` is that hold-up. Metrics first: see tracking's docstring.
        """
        if self._last_saved_step == self.progress.step and self.progress.last_checkpoint:
            seconds = self.saver.wait() if wait else 0.0
            self.progress.save_seconds += seconds
            return self.progress.last_checkpoint, seconds
        with self.guard.deferred():
            self.tracker.flush()
            self._touch_ledger()
            ledger = json.loads(json.dumps(self.ledger))  # as of this step; written once the checkpoint is

            def record(entry: Entry) -> None:
                self.store.write_ledger(ledger)

            seconds = self.saver.submit(self._state(), self.progress.step, self.epoch, then=record)
            if wait:
                seconds += self.saver.wait()
            self.progress.last_checkpoint = f"ckpt-{self.progress.step:08d}.pt"
            self.progress.save_seconds += seconds
            self._last_saved_step = self.progress.step
            self._touch_ledger()
        self.tracker.log_step(self.progress.step, {"checkpoint_save_seconds": seconds})
        return self.progress.last_checkpoint, seconds

    def _preempt(self) -> None:
        """SIGTERM: the save in flight is finished, then the current state saved; nothing is lost."""
        name, seconds = self._checkpoint(wait=True)
        self._touch_ledger(force=True)
        say(f"TOLLGATE_PREEMPTED step={self.progress.step} checkpoint={name} save_seconds={seconds:.3f}")
        self.progress.preempted_reported = True
        raise Preempted("SIGTERM: checkpoint saved")

    # -- the loop -------------------------------------------------------------------------------
    def _evaluate(self) -> tuple[dict[str, float], np.ndarray]:
        self.model.eval()
        chunks = []
        with torch.no_grad():
            for start in range(0, self.n_holdout, EVAL_BATCH):
                logits = self.model(
                    self.h_cat[start : start + EVAL_BATCH], self.h_num[start : start + EVAL_BATCH]
                )
                chunks.append(torch.sigmoid(logits).cpu())
        self.model.train()
        p = torch.cat(chunks).numpy().astype(np.float64)
        return evaluate(self.h_y, p), p

    def _train_loop(self) -> tuple[int, float]:
        s, bs = self.s, self.s.batch_size
        rows, started = 0, time.perf_counter()
        delay = float(os.environ.get(STEP_DELAY_ENV) or 0.0)
        pause_after = int(os.environ.get(PAUSE_AFTER_STEP_ENV) or 0)
        self.model.train()
        with self.guard.deferred():
            while self.epoch < s.epochs:
                order = epoch_permutation(s.seed, self.epoch, self.n_train)
                if self.batch == 0:
                    self.epoch_loss_sum, self.epoch_rows = 0.0, 0
                while self.batch < self.batches_per_epoch:
                    index = order[self.batch * bs : (self.batch + 1) * bs].to(self.device)
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.optimizer.zero_grad(set_to_none=True)
                    loss = self.loss_fn(self.model(self.x_cat[index], self.x_num[index]), self.y[index])
                    loss.backward()
                    self.optimizer.step()
                    self.scheduler.step()
                    loss_value = float(loss.item())
                    self.batch += 1
                    self.progress.step += 1
                    self.epoch_loss_sum += loss_value * len(index)
                    self.epoch_rows += len(index)
                    rows += len(index)
                    self._touch_ledger()
                    say(f"TOLLGATE_PROGRESS step={self.progress.step} epoch={self.epoch + 1}")
                    self.tracker.log_step(self.progress.step, {"train_loss": loss_value, "lr": lr})
                    if delay:
                        time.sleep(delay)
                    self.saver.check()  # a background save that failed (StaleAttempt) stops the loop
                    if self.guard.requested:
                        self._preempt()
                    if self.progress.step % s.checkpoint_every == 0:
                        self._checkpoint()
                    if self.progress.step == pause_after:
                        self.saver.wait()  # the test point pauses with this step's checkpoint committed
                        say(f"TOLLGATE_PAUSED step={self.progress.step}")
                        os.kill(os.getpid(), signal.SIGSTOP)
                metrics, _ = self._evaluate()
                self.tracker.log_step(
                    self.progress.step,
                    {
                        "epoch": self.epoch + 1,
                        "epoch_train_loss": self.epoch_loss_sum / max(1, self.epoch_rows),
                        **{f"holdout_{k}": v for k, v in metrics.items()},
                    },
                )
                log(
                    f"epoch {self.epoch + 1}/{s.epochs} step {self.progress.step}: "
                    f"train loss {self.epoch_loss_sum / max(1, self.epoch_rows):.4f}, holdout "
                    + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                )
                if self.guard.requested:
                    self._preempt()
                self.epoch, self.batch = self.epoch + 1, 0
            # the final state, committed, so a preemption during publishing redoes no training
            self._checkpoint(wait=True)
            if self.guard.requested:
                self._preempt()
        return rows, time.perf_counter() - started

    # -- publishing -----------------------------------------------------------------------------
    def _publish(self, result: dict[str, Any]) -> None:
        """Model files first, result.json last: a reader that sees result.json sees a complete model."""
        with self.store.storage.locked():
            self.store.check_owner(f"publish the model to {self.s.output_uri}")
        out = Folder(self.s.output_uri)
        with tempfile.TemporaryDirectory(prefix="tollgate-model-") as tmp:
            folder = Path(tmp)
            state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            torch.save(state, folder / "model.pt")
            config = {
                "format": 1,
                "model": self.model_config.to_dict(),
                "features": self.encoder.to_dict(),
                "feature_columns": self.encoder.feature_columns,
                "label": schema.LABEL,
                "training_run_id": self.s.training_run_id,
                "hyperparameters": self.s.hyperparameters(),
                "dataset": self.dataset.as_dict(),
            }
            if self.s.quality == "slow":  # fault injection, signed with the model: never a router setting
                config["serving_delay_ms"] = SLOW_SERVING_DELAY_MS
            if self.s.quality == "miscalibrated":  # fault injection, signed with the model (see settings)
                config["miscalibration"] = {
                    "column": "user_id",
                    "above": self.miscalibrated_above,
                    "logit_shift": MISCALIBRATED_LOGIT_SHIFT,
                }
            (folder / "model_config.json").write_text(json.dumps(config, indent=2))
            (folder / "result.json").write_text(json.dumps(result, indent=2))
            if not isinstance(self.tracker, NullTracker):
                self.tracker.log_artifacts(folder, "trainer_output")
            for name in ("model.pt", "model_config.json", "result.json"):
                out.write(name, (folder / name).read_bytes())

    def run(self) -> dict[str, Any]:
        s = self.s
        self._claim_folder()
        self._prepare()
        self._last_saved_step = -1
        started = time.perf_counter()
        resumed_from = self._resume()
        self.progress.timings["restore"] = time.perf_counter() - started
        say(f"TOLLGATE_RESUMED from_step={self.progress.step} checkpoint={resumed_from or 'none'}")
        say("TOLLGATE_TIMINGS " + " ".join(f"{k}_s={v:.3f}" for k, v in self.progress.timings.items()))
        if resumed_from:
            log(
                f"resumed from {resumed_from} at step {self.progress.step} "
                f"(epoch {self.epoch + 1}, batch {self.batch}) in {self.progress.restore_seconds:.3f} s"
            )
        self._open_attempt(resumed_from)
        # MLflow opens beside the first steps: they need none of it (see OpeningTracker).
        resumed_step = self.progress.step
        self.tracker = OpeningTracker(lambda: self._open_tracking(resumed_from, resumed_step))
        log(
            f"training on {self.device.type}: {self.n_train} rows, {self.n_holdout} held out, "
            f"{self.total_steps} steps, checkpoints every {s.checkpoint_every} to {s.checkpoint_uri}"
        )
        try:
            rows, seconds = self._train_loop()
        except BaseException:
            self.saver.drain()  # no write of this attempt outlives its exit report
            raise
        metrics, _ = self._evaluate()
        self._close_attempt("succeeded")
        if isinstance(self.tracker, OpeningTracker):
            self.tracker = self.tracker.ready()
        summary = self.spot_summary()
        result = {
            "metrics": metrics,
            "mlflow_run_id": self.tracker.run_id,
            "training_run_id": s.training_run_id,
            "steps": self.progress.step,
            "epochs": s.epochs,
            "rows_per_second": round(rows / seconds, 1) if rows and seconds > 0 else None,
            "resumed_from": resumed_from,
            "final_checkpoint": self.progress.last_checkpoint,
            "checkpoint_save_seconds_total": summary["checkpoint_save_seconds_total"],
            "checkpoint_restore_seconds_total": summary["checkpoint_restore_seconds_total"],
            "steps_redone": summary["steps_redone"],
            "attempts": summary["attempts"],
            "preemptions": summary["preemptions"],
            "dataset": self.dataset.as_dict(),
            "device": self.device.type,
            "train_rows": self.n_train,
            "holdout_rows": self.n_holdout,
            "quality": s.quality,
        }
        self.tracker.log_metrics(
            self.progress.step,
            {
                **metrics,
                **{k: v for k, v in summary.items() if k != "preemptions"},
                "preemptions": summary["preemptions"],
                **({"rows_per_second": result["rows_per_second"]} if result["rows_per_second"] else {}),
            },
        )
        self.tracker.set_tags(
            {"tollgate.preemptions": summary["preemptions"], "tollgate.outcome": "succeeded"}
        )
        self._publish(result)
        self.tracker.end("FINISHED")
        return result
