"""Running ``python -m tollgate.training`` as a real child process and interrupting it with real signals.

For the trainer's integration tests and benchmarks (no pytest import here; not used in training).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PAUSE_ENV = "TOLLGATE_PAUSE_AFTER_STEP"  # trainer.PAUSE_AFTER_STEP_ENV (not imported: it loads torch)
PAUSE_DURING_SAVE_ENV = "TOLLGATE_PAUSE_DURING_SAVE"  # trainer.PAUSE_DURING_SAVE_ENV
PROGRESS = re.compile(r"^TOLLGATE_PROGRESS step=(\d+) epoch=(\d+)$")
RESUMED = re.compile(r"^TOLLGATE_RESUMED from_step=(\d+) checkpoint=(\S+)$")
PREEMPTED = re.compile(r"^TOLLGATE_PREEMPTED step=(\d+) checkpoint=(\S+) save_seconds=([\d.]+)$")
PAUSED = re.compile(r"^TOLLGATE_PAUSED step=(\d+)$")
STARTED = re.compile(r"^TOLLGATE_STARTED pid=(\d+)$")


@dataclass
class Attempt:
    returncode: int
    stdout: list[str]
    stderr: str
    signal_sent_at: float | None = None
    exited_at: float = 0.0
    steps_seen: list[int] = field(default_factory=list)

    @property
    def resumed(self) -> tuple[int, str]:
        for line in self.stdout:
            if m := RESUMED.match(line):
                return int(m[1]), m[2]
        raise AssertionError(f"no TOLLGATE_RESUMED line in stdout:\n{self.tail()}")

    @property
    def preempted(self) -> tuple[int, str, float]:
        for line in self.stdout:
            if m := PREEMPTED.match(line):
                return int(m[1]), m[2], float(m[3])
        raise AssertionError(f"no TOLLGATE_PREEMPTED line in stdout:\n{self.tail()}")

    @property
    def last_step(self) -> int:
        return self.steps_seen[-1] if self.steps_seen else 0

    def tail(self) -> str:
        return "\n".join(self.stdout[-5:]) + "\n--- stderr ---\n" + self.stderr[-3000:]


def trainer_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "tollgate.training", *args]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Env for a trainer child process.

    When the parent runs with PYTHONDONTWRITEBYTECODE, every child would compile torch and pandas
    from source (tens of CPU seconds each); children keep a bytecode cache in a private folder
    instead (PYTHONPYCACHEPREFIX), which leaves the installed packages untouched.
    """
    full = {**os.environ, **(extra or {})}
    full["PYTHONUNBUFFERED"] = "1"
    if full.pop("PYTHONDONTWRITEBYTECODE", None) and "PYTHONPYCACHEPREFIX" not in full:
        full["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / f"tollgate-pycache-{os.getuid()}")
    return full


def run_attempt(
    args: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    interrupt_at: int | None = None,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 300,
    pause_at: int | None = None,
    pause_during_save: str | None = None,
) -> Attempt:
    """Run one attempt; when ``interrupt_at`` is given, send ``sig`` once that step is reported.

    ``pause_at``: the trainer stops itself after that step (and its checkpoint); ``sig`` is sent to the
    stopped process, then SIGCONT. With SIGKILL that is an exact kill point: no step runs after it.
    ``pause_during_save`` ("<step>:<stage>"): the same, but the process stops while its background worker
    writes that step's checkpoint (the training thread may have run a few steps further by then).
    """
    extra = {PAUSE_ENV: str(pause_at)} if pause_at else {}
    if pause_during_save:
        extra[PAUSE_DURING_SAVE_ENV] = pause_during_save
    full_env = child_env({**(env or {}), **extra})
    pausing = pause_at is not None or pause_during_save is not None
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w+") as err:
        proc = subprocess.Popen(
            trainer_command(args), stdout=subprocess.PIPE, stderr=err, text=True, env=full_env
        )
        lines: list[str] = []
        steps: list[int] = []
        sent_at = None
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            if pausing and PAUSED.match(line):
                # The line comes just before the trainer stops itself: a signal sent in between (SIGCONT
                # included) would be spent before the stop, and the stopped trainer would wait forever.
                wait_stopped(proc.pid)
                proc.send_signal(sig)
                sent_at = time.monotonic()
                proc.send_signal(signal.SIGCONT)
            if m := PROGRESS.match(line):
                steps.append(int(m[1]))
                if interrupt_at is not None and sent_at is None and int(m[1]) >= interrupt_at:
                    proc.send_signal(sig)
                    sent_at = time.monotonic()
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"trainer did not finish within {timeout} s")
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        exited = time.monotonic()
        err.seek(0)
        stderr = err.read()
    return Attempt(rc, lines, stderr, sent_at, exited, steps)


def wait_stopped(pid: int, timeout: float = 60.0) -> None:
    """Wait until ``pid`` is stopped (state T in /proc), i.e. its SIGSTOP has taken effect."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return
        time.sleep(0.01)
    raise AssertionError(f"the trainer (pid {pid}) printed TOLLGATE_PAUSED, not stopped after {timeout} s")
