"""Training throughput of the real entrypoint (``python -m tollgate.training``) in rows per second.

Runs the trainer on generated data with the contract's default model and batch size, once with the
default checkpoint interval and once with checkpoints effectively off, and prints the training-loop
throughput each reports in result.json (``rows_per_second``: rows trained / loop wall time, which
includes checkpoint saves and the per-epoch holdout evaluation) plus the whole process's wall time.

Usage: python benchmarks/training_throughput.py [--rows 100000] [--epochs 1] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from tollgate.data.generator import generate
from tollgate.training import exit_codes
from tollgate.training.testing import run_attempt


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tollgate-throughput-") as tmp:
        work = Path(tmp)
        days = max(1, args.rows // 20_000)
        frame = pd.concat([generate(f"2025-03-{d + 1:02d}", rows=args.rows // days) for d in range(days)])
        data = work / "events.parquet"
        frame.to_parquet(data, index=False)
        print(
            f"{len(frame)} rows (80 % trained), batch {args.batch_size}, {args.epochs} epoch(s), "
            f"1 intra-op thread (deterministic), load average {os.getloadavg()[0]:.1f}"
        )
        print(f"{'checkpoints':24}{'steps':>7}{'rows/s':>10}{'ckpt save s':>13}{'process wall s':>16}")
        for label, every in (("every 50 steps", 50), ("off", 10**9)):
            run = work / str(every)
            started = time.perf_counter()
            command = [
                "--data-file", str(data), "--checkpoint-uri", str(run / "ckpt"),
                "--output-uri", str(run / "out"), "--training-run-id", f"tp-{every}",
                "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                "--checkpoint-every", str(every), "--mlflow-uri", "",
            ]  # fmt: skip
            attempt = run_attempt(command, run / "stderr.log")
            wall = time.perf_counter() - started
            assert attempt.returncode == exit_codes.SUCCESS, attempt.tail()
            result = json.loads((run / "out" / "result.json").read_text())
            print(
                f"{label:24}{result['steps']:>7}{result['rows_per_second']:>10,.0f}"
                f"{result['checkpoint_save_seconds_total']:>13.2f}{wall:>16.1f}"
            )
        print(f"holdout AUC after {args.epochs} epoch(s): {result['metrics']['auc']:.3f}")


if __name__ == "__main__":
    main()
