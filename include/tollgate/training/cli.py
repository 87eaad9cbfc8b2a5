"""Runs one attempt of a training run and maps its outcome to an exit code (see exit_codes.py)."""

from __future__ import annotations

import os
import sys
import time
import traceback

from tollgate.storage import UnsupportedLocation
from tollgate.training import exit_codes
from tollgate.training.errors import BadInput, Preempted, StaleAttempt
from tollgate_torch.folder import UnsupportedLocation as UnsupportedFolder


def main(argv: list[str] | None = None) -> int:
    from tollgate.training.settings import parse
    from tollgate_torch.preemption import PreemptionGuard

    # Handle SIGTERM from the first moment (the grace period is set once the arguments are read).
    guard = PreemptionGuard(grace_seconds=30.0)
    guard.install()
    trainer = None
    started = time.perf_counter()
    try:
        # Readiness line: from here a SIGTERM is the spot notice, handled (tests wait for it, never sleep).
        # Inside the try: a SIGTERM that lands while this line is written is a preemption too.
        print(f"TOLLGATE_STARTED pid={os.getpid()}", flush=True)
        settings = parse(argv)
        guard.grace_seconds = settings.grace_seconds
        from tollgate.training.trainer import Trainer, log

        trainer = Trainer(settings, guard)
        trainer.progress.timings["imports"] = time.perf_counter() - started
        result = trainer.run()
        log(
            f"done: {result['steps']} steps, holdout auc {result['metrics']['auc']:.4f}, "
            f"model in {settings.output_uri}"
        )
        return exit_codes.SUCCESS
    except Preempted:
        with guard.deferred():
            _report_preemption(trainer)
        return exit_codes.PREEMPTED
    except StaleAttempt as exc:  # a newer attempt owns the checkpoints: leave the ledger and MLflow to it
        print(f"tollgate.training: stopped: {exc}", file=sys.stderr, flush=True)
        return exit_codes.SUPERSEDED
    except (BadInput, UnsupportedLocation, UnsupportedFolder) as exc:  # an unsupported URI is bad input
        print(f"tollgate.training: bad input: {exc}", file=sys.stderr, flush=True)
        _close(trainer, "bad_input", "FAILED")
        return exit_codes.BAD_INPUT
    except Exception:
        traceback.print_exc()
        print("tollgate.training: training failed (see the traceback above)", file=sys.stderr, flush=True)
        _close(trainer, "failed", "FAILED")
        return exit_codes.FAILURE
    finally:
        guard.uninstall()


def _report_preemption(trainer) -> None:
    """Preempted outside the loop (set-up or publishing): nothing new to save, say where we stand."""
    if trainer is not None and not trainer.progress.preempted_reported:
        p = trainer.progress
        print(
            f"TOLLGATE_PREEMPTED step={p.step} checkpoint={p.last_checkpoint or 'none'} save_seconds=0.000",
            flush=True,
        )
    elif trainer is None:
        print("TOLLGATE_PREEMPTED step=0 checkpoint=none save_seconds=0.000", flush=True)
    _close(trainer, "preempted", "KILLED")


def _close(trainer, outcome: str, mlflow_status: str) -> None:
    """Best effort: record the attempt's end in the ledger and MLflow (never masks the exit code)."""
    if trainer is None:
        return
    try:
        if trainer.progress.attempt:
            trainer._close_attempt(outcome)
    except Exception as exc:
        print(f"tollgate.training: could not update the attempt ledger: {exc}", file=sys.stderr)
    try:
        trainer.tracker.set_tags({"tollgate.outcome": outcome})
        trainer.tracker.end(mlflow_status)
    except Exception as exc:
        print(f"tollgate.training: could not update MLflow: {exc}", file=sys.stderr)
