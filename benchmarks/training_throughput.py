"""Training throughput of the real entrypoint (``python -m tollgate.training``) in rows per second.

Runs the trainer on generated data with the contract's default model and batch size, with a checkpoint
every 50 steps and with checkpoints effectively off, ``--repeat`` times each, interleaved (the order
alternates every round, so a drift in machine load hits both alike). Each run is long enough to hold
several checkpoints. Prints, per configuration, the median and the spread (min..max) of the training
loop's throughput from result.json (``rows_per_second``: rows trained / loop wall time, which includes
checkpoint stalls and the per-epoch holdout evaluation), the median checkpoint stall per run, and the
ratio of the medians.

``--baseline-src DIR`` adds a third configuration, interleaved with the others: a checkpoint every 50
steps with another checkout's code (``DIR/include`` first on PYTHONPATH), e.g. the commit before a change
(``git worktree add /tmp/before <commit>``), so before and after are measured in the same run.

``--s3`` writes the checkpoints to S3 (a local ``moto_server``) instead of a local folder.

Usage: python benchmarks/training_throughput.py [--rows 100000] [--epochs 2] [--repeat 5]
       [--batch-size 256] [--baseline-src DIR] [--s3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from tollgate.data.generator import generate
from tollgate.training import exit_codes
from tollgate.training.testing import run_attempt

EVERY = 50
OFF = 10**9


def one_run(data: Path, run: Path, every: int, args: argparse.Namespace, env: dict[str, str]) -> dict:
    checkpoints = f"s3://bench/{run.name}/ckpt" if args.s3 else str(run / "ckpt")
    command = [
        "--data-file", str(data), "--checkpoint-uri", checkpoints,
        "--output-uri", str(run / "out"), "--training-run-id", run.name,
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--checkpoint-every", str(every), "--mlflow-uri", "",
    ]  # fmt: skip
    started = time.perf_counter()
    attempt = run_attempt(command, run.with_suffix(".log"), env=env)
    wall = time.perf_counter() - started
    assert attempt.returncode == exit_codes.SUCCESS, attempt.tail()
    result = json.loads((run / "out" / "result.json").read_text())
    return {**result, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--s3", action="store_true", help="checkpoints on a local moto_server")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.s3:
            from local_s3 import moto_endpoint

            stack.enter_context(moto_endpoint("bench"))
        measure(args)


def measure(args: argparse.Namespace) -> None:
    configs: list[tuple[str, int, dict[str, str]]] = [
        (f"every {EVERY} steps", EVERY, {}),
        ("off", OFF, {}),
    ]
    if args.baseline_src is not None:
        include = (args.baseline_src / "include").resolve()
        assert include.is_dir(), f"{include} is not a folder: pass a checkout's root as --baseline-src"
        path = os.pathsep.join(p for p in (str(include), os.environ.get("PYTHONPATH", "")) if p)
        configs.append((f"every {EVERY}, baseline src", EVERY, {"PYTHONPATH": path}))
    with tempfile.TemporaryDirectory(prefix="tollgate-throughput-") as tmp:
        work = Path(tmp)
        days = max(1, args.rows // 20_000)
        frame = pd.concat([generate(f"2025-03-{d + 1:02d}", rows=args.rows // days) for d in range(days)])
        data = work / "events.parquet"
        frame.to_parquet(data, index=False)
        print(
            f"{len(frame)} rows (80 % trained), batch {args.batch_size}, {args.epochs} epoch(s), "
            f"{args.repeat} interleaved runs per configuration, 1 intra-op thread (deterministic), "
            f"checkpoints on {'S3 (moto_server)' if args.s3 else 'a local folder'}, "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        results: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
        for round_ in range(args.repeat):
            order = configs if round_ % 2 == 0 else list(reversed(configs))
            for label, every, env in order:
                run = work / f"r{round_}-{every}-{len(env)}"
                results[label].append(one_run(data, run, every, args, env))
            print(f"round {round_ + 1}/{args.repeat} done, load average {os.getloadavg()[0]:.1f}", flush=True)
        print(
            f"{'checkpoints':28}{'steps':>6}{'median rows/s':>15}{'min..max rows/s':>20}{'spread':>8}"
            f"{'ckpt stall s':>14}{'wall s':>8}"
        )
        medians = {}
        for label, runs in results.items():
            rates = [r["rows_per_second"] for r in runs]
            medians[label] = median = statistics.median(rates)
            stall = statistics.median(r["checkpoint_save_seconds_total"] for r in runs)
            print(
                f"{label:28}{runs[0]['steps']:>6}{median:>15,.0f}"
                f"{f'{min(rates):,.0f}..{max(rates):,.0f}':>20}{(max(rates) - min(rates)) / median:>8.1%}"
                f"{stall:>14.3f}{statistics.median(r['wall'] for r in runs):>8.1f}"
            )
        off = medians["off"]
        for label, median in medians.items():
            if label != "off":
                print(f"{label}: {median / off - 1:+.1%} against checkpoints off (median against median)")
        print(f"holdout AUC after {args.epochs} epoch(s): {runs[-1]['metrics']['auc']:.3f}")


if __name__ == "__main__":
    main()
