"""Time from a spot interruption to training resumed, with the local launcher and the real trainer.

For each trial: attempt 1 runs until step N and gets SIGTERM (or SIGKILL); attempt 2 is launched at once
(as Airflow's retry would, minus its retry delay and scheduling) and resumes from the checkpoint. The
figure is SIGTERM -> first ``TOLLGATE_PROGRESS`` line of attempt 2, split into: the trainer's exit after
the notice (final checkpoint + shutdown), process start to the resume report (interpreter, imports, data,
checkpoint restore), and resume report to the first new step. A fresh start of attempt 1 is printed beside
it. Work lost is the steps attempt 2 repeats.

Usage: python benchmarks/preemption_resume_latency.py [--trials 3] [--rows 20000] [--sigkill]

Measured 2026-11-29 (2-core machine, under the shared lock, 3 trials each, one after the other): main
6.17 s median (5.87-6.96; process start 6.11 s) -> 2.57 s (2.44-2.71; start 2.52 s) once the trainer
keeps a bytecode cache (the worker runs with PYTHONDONTWRITEBYTECODE). The whole path through Airflow is
benchmarks/preemption_resume_airflow.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from tollgate.launch.job import TrainingJob
from tollgate.launch.local import Interruption, LocalLauncher
from tollgate.training.synthetic import write_parquet


def trial(workdir: Path, data: Path, at_step: int, sigkill: bool, every: int) -> dict[str, float]:
    job = TrainingJob(
        training_run_id=workdir.name,
        image="local",
        checkpoint_uri=str(workdir / "checkpoints"),
        output_uri=str(workdir / "model"),
        trainer_args={
            "data-file": str(data),
            "epochs": 1,
            "batch-size": 64,
            "checkpoint-every": every,
            "mlflow-uri": "",
        },
        grace_seconds=30,
    )
    quiet = lambda line: None  # noqa: E731
    first = LocalLauncher(job, log=quiet).run(Interruption(at_step=at_step, sigkill=sigkill))
    second = LocalLauncher(job, log=quiet).run()
    if second.exit_code != 0 or second.first_progress_at is None or second.resumed_line_at is None:
        raise SystemExit(
            f"attempt 2 did not resume and finish (exit {second.exit_code}):\n" + "\n".join(second.tail)
        )
    signal_at = first.signals[0][0]
    # attempt 2 runs after attempt 1, so put both on one clock: its start is attempt 1's end
    offset = first.ended_at - second.started_at
    return {
        "interrupt_to_resumed_training_s": second.first_progress_at + offset - signal_at,
        "notice_to_exit_s": first.ended_at - signal_at,
        "start_to_resume_report_s": second.resumed_line_at - second.started_at,
        "resume_report_to_first_step_s": second.first_progress_at - second.resumed_line_at,
        "fresh_start_to_first_step_s": (first.first_progress_at or first.started_at) - first.started_at,
        "interrupted_at_step": float(first.last_step or 0),
        "resumed_from_step": float(second.resumed_from_step or 0),
        "steps_lost": float((first.last_step or 0) - (second.resumed_from_step or 0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--at-step", type=int, default=37)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--sigkill", action="store_true", help="SIGKILL (no notice) instead of SIGTERM")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as tmp:
        root = Path(tmp)
        data = Path(write_parquet(root / "events.parquet", args.rows, seed=1))
        rows = [
            trial(root / f"trial-{i}", data, args.at_step + i, args.sigkill, args.checkpoint_every)
            for i in range(args.trials)
        ]
    signal_name = "SIGKILL" if args.sigkill else "SIGTERM"
    print(
        f"Preemption -> resume latency, local launcher, real trainer ({signal_name}, {args.rows} rows, "
        f"checkpoint every {args.checkpoint_every} steps, {args.trials} trials; "
        f"python {sys.version.split()[0]})"
    )
    print(f"{'figure':<34}{'median':>10}{'min':>10}{'max':>10}")
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"{key:<34}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}")


if __name__ == "__main__":
    main()
