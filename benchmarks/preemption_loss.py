"""Work lost to a spot interruption, with real trainer processes and real signals.

For each trial the trainer runs on generated data until step N, gets SIGTERM (the spot notice) or
SIGKILL (no notice: node lost), and a second attempt resumes from the checkpoint store. Lost work
is the steps the first attempt had finished that the second one must compute again: the highest
step attempt 1 reached (its ledger) minus the step attempt 2 resumed from. Target: 0 on SIGTERM,
at most the checkpoint interval on SIGKILL. Also prints the notice-to-exit time on SIGTERM.

Usage: python benchmarks/preemption_loss.py [--rows 20000] [--every 50] [--points 23,77,140]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
from pathlib import Path

import pandas as pd

from tollgate.data.generator import generate
from tollgate.training import exit_codes
from tollgate.training.testing import run_attempt


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=50, help="checkpoint interval in steps")
    parser.add_argument("--points", default="23,77,140", help="steps at which to interrupt")
    parser.add_argument("--step-delay", type=float, default=0.01, help="seconds per step added (pacing)")
    args = parser.parse_args()
    points = [int(p) for p in args.points.split(",")]
    with tempfile.TemporaryDirectory(prefix="tollgate-preempt-bench-") as tmp:
        work = Path(tmp)
        data = work / "events.parquet"
        pd.concat([generate("2025-03-01", rows=args.rows)]).to_parquet(data, index=False)
        print(
            f"{args.rows} rows, batch 64, checkpoint every {args.every} steps, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(
            f"{'signal':8}{'at step':>8}{'stopped':>9}{'resumed':>9}{'lost':>6}"
            f"{'notice->exit':>14}{'save':>9}"
        )
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for point in points:
                run = work / f"{sig.name}-{point}"
                common = [
                    "--data-file", str(data), "--checkpoint-uri", str(run / "ckpt"),
                    "--output-uri", str(run / "out"), "--training-run-id", run.name, "--epochs", "1",
                    "--batch-size", "64", "--checkpoint-every", str(args.every), "--mlflow-uri", "",
                ]  # fmt: skip
                env = {"TOLLGATE_STEP_DELAY_SECONDS": str(args.step_delay)}
                first = run_attempt(common, run / "a1.log", env=env, interrupt_at=point, sig=sig)
                expected = exit_codes.PREEMPTED if sig == signal.SIGTERM else -signal.SIGKILL
                assert first.returncode == expected, first.tail()
                # attempt 2 only needs to report where it resumed: stop it right after
                second = run_attempt(common, run / "a2.log", interrupt_at=1, sig=signal.SIGKILL)
                resumed, _ = second.resumed
                # attempt 2 reconciled attempt 1's ledger entry with its per-step heartbeat
                ledger = json.loads((run / "ckpt" / "progress.json").read_text())
                reached = ledger["attempts"][0]["highest_step"]
                notice = save = ""
                if sig == signal.SIGTERM:
                    _, _, save_s = first.preempted
                    notice = f"{(first.exited_at - first.signal_sent_at):.2f}s"
                    save = f"{save_s * 1e3:.0f}ms"
                print(
                    f"{sig.name:8}{point:>8}{reached:>9}{resumed:>9}{reached - resumed:>6}"
                    f"{notice:>14}{save:>9}"
                )


if __name__ == "__main__":
    main()
