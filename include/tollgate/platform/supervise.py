"""Restart a local platform service that crashed after it had been running, as Kubernetes restarts a pod.

    python -m tollgate.platform.supervise --name airflow-scheduler -- airflow scheduler

The Airflow components of the local platform run under this: an Airflow scheduler on SQLite can die on a
database race (seen once in a full test run: a DAG run's row gone under the scheduler's session, and its
error handler failing on it), and in production its pod would simply be restarted. Here the service is
restarted after ``backoff`` seconds (doubling, at most 30 s), each restart written to the service's log.

What is not restarted:
- a child that exits 0 (it chose to stop);
- a child that dies within ``min_uptime`` seconds of its start (a configuration error: ``make up`` must fail
  at once and show it, not retry it);
- a crash beyond ``max_restarts`` within ten minutes (then the supervisor exits with the child's code, and
  ``make status`` shows the service down).

SIGTERM and SIGINT end supervision: the platform stops a service by signalling its whole process group,
which holds the supervisor and the child, and the supervisor exits with the child's code once it is gone.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

WINDOW_S = 600.0


def supervised(name: str, command: Sequence[str]) -> list[str]:
    """``command`` run under this supervisor (same interpreter)."""
    return [sys.executable, "-m", "tollgate.platform.supervise", "--name", name, "--", *command]


def say(name: str, message: str) -> None:
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')} supervise {name}: {message}", flush=True)


def supervise(
    command: Sequence[str],
    name: str,
    min_uptime: float = 30.0,
    max_restarts: int = 5,
    backoff: float = 1.0,
) -> int:
    """Run ``command`` until it exits 0, is stopped by a signal to us, or crashes too early or too often."""
    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        # The platform signals the whole group, so the child has the signal too. Sent to us alone, it is
        # passed on after a grace period (never twice at once: a second SIGTERM can cut a clean shutdown).
        passing_on = threading.Timer(
            5.0, lambda: child is not None and child.poll() is None and child.send_signal(signum)
        )
        passing_on.daemon = True  # it must not keep the supervisor alive once the child is gone
        passing_on.start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    crashes: list[float] = []
    delay = backoff
    while True:
        started = time.monotonic()
        child = subprocess.Popen(list(command))
        code = child.wait()
        if stopping or code == 0:
            return code
        ran = time.monotonic() - started
        if ran < min_uptime:
            say(name, f"exited with code {code} after {ran:.1f} s (under {min_uptime:.0f} s): not restarted")
            return code
        now = time.monotonic()
        crashes = [t for t in crashes if now - t < WINDOW_S] + [now]
        if len(crashes) > max_restarts:
            say(name, f"exited with code {code}: {len(crashes)} crashes within {WINDOW_S:.0f} s, giving up")
            return code
        say(name, f"exited with code {code} after {ran:.0f} s; restarting in {delay:.0f} s")
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not stopping:
            time.sleep(0.1)
        if stopping:
            return code
        delay = min(delay * 2, 30.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the service's name, for the log lines")
    parser.add_argument("--min-uptime", type=float, default=30.0)
    parser.add_argument("--max-restarts", type=int, default=5)
    parser.add_argument("--backoff", type=float, default=1.0)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the service's command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to supervise: give it after --")
    return supervise(command, args.name, args.min_uptime, args.max_restarts, args.backoff)


if __name__ == "__main__":
    sys.exit(main())
