"""The local launcher (the embedded default): the trainer as a child process in its own process group.

Same command and environment as the pod. Output is streamed line by line to a callback (the Airflow task
log). Spot interruptions can be injected for demos and tests: SIGTERM (or SIGKILL) after X seconds or at
step N, watched through the trainer's ``TOLLGATE_PROGRESS`` lines. Stopping honours the grace period like
the kubelet: SIGTERM to the group, wait the pod's grace, then SIGKILL. Plain Python (no Airflow).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tollgate.launch.job import TrainingJob

PROGRESS = re.compile(r"^TOLLGATE_PROGRESS step=(\d+)")
RESUMED = re.compile(r"^TOLLGATE_RESUMED from_step=(\d+)(?: checkpoint=(\S+))?")
PREEMPTED = re.compile(r"^TOLLGATE_PREEMPTED step=(\d+)")

INTERRUPTION_MODES = ("none", "sigterm_at_step", "sigterm_after_seconds")


@dataclass(frozen=True)
class Interruption:
    """A spot interruption injected into one attempt.

    ``at_step`` counts steps from where the attempt started (so on a fresh run it is the global step);
    ``sigkill`` delivers SIGKILL instead of SIGTERM: a capacity loss with no notice and no final checkpoint.
    """

    at_step: int | None = None
    after_seconds: float | None = None
    sigkill: bool = False

    def __post_init__(self) -> None:
        if (self.at_step is None) == (self.after_seconds is None):
            raise ValueError("An interruption needs exactly one of at_step or after_seconds.")
        if (self.at_step is not None and self.at_step < 1) or (
            self.after_seconds is not None and self.after_seconds < 0
        ):
            raise ValueError(f"Interruption point must be positive: {self}")

    @classmethod
    def from_params(cls, mode: str, value: float | int | None, sigkill: bool = False) -> Interruption | None:
        """From the DAG's Params: mode none | sigterm_at_step | sigterm_after_seconds, and its value."""
        if mode in (None, "", "none"):
            return None
        if mode not in INTERRUPTION_MODES:
            raise ValueError(f"Unknown interruption {mode!r}; use one of {', '.join(INTERRUPTION_MODES)}.")
        if value is None:
            raise ValueError(f"Interruption {mode} needs interruption_value (a step or seconds).")
        if mode == "sigterm_at_step":
            return cls(at_step=int(value), sigkill=bool(sigkill))
        return cls(after_seconds=float(value), sigkill=bool(sigkill))

    def describe(self) -> str:
        sig = "SIGKILL" if self.sigkill else "SIGTERM"
        where = f"at step +{self.at_step}" if self.at_step is not None else f"after {self.after_seconds:g} s"
        return f"{sig} {where}"


@dataclass
class LocalRunResult:
    exit_code: int
    interrupted: bool  # an injected interruption was delivered
    escalated: bool  # SIGKILL sent because the grace period ran out
    stopped: bool  # stopped from outside (Airflow on_kill)
    resumed_from_step: int | None
    resumed_checkpoint: str | None
    last_step: int | None
    preempted_at_step: int | None
    signals: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, name)
    started_at: float = 0.0  # monotonic
    resumed_line_at: float | None = None  # when the trainer reported where it resumed (restore done)
    first_progress_at: float | None = None
    ended_at: float = 0.0
    tail: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.ended_at - self.started_at


# What a trainer may inherit from the Airflow worker: paths, locale, its own settings, MLflow and object
# storage access, accelerators and Python's own switches. Everything else (AIRFLOW__*, AIRFLOW_CONN_*,
# AIRFLOW_VAR_*, ...) stays with the worker.
TRAINER_ENV_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
     "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GIT_PYTHON_REFRESH", "NO_PROXY", "no_proxy",
     "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"}
)  # fmt: skip
TRAINER_ENV_PREFIXES = ("TOLLGATE_", "MLFLOW_", "AWS_", "CUDA_", "NVIDIA_", "PYTHON", "LC_")


def trainer_environment(worker_env: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of ``worker_env``."""
    return {
        name: value
        for name, value in worker_env.items()
        if name in TRAINER_ENV_NAMES or name.startswith(TRAINER_ENV_PREFIXES)
    }


def bytecode_cache(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with a private bytecode cache in place of PYTHONDONTWRITEBYTECODE.

    A worker that keeps the installed packages free of ``.pyc`` files (PYTHONDONTWRITEBYTECODE) would
    otherwise make every attempt compile torch, pandas and torch._dynamo from source: seconds of each
    start, on the path from a spot notice to training again. The trainer writes its bytecode to
    ``$TOLLGATE_HOME/cache/pycache`` (else a per-user temp folder) instead, and the retry reuses it;
    the installed packages stay untouched. A PYTHONPYCACHEPREFIX already set is kept as it is.
    """
    out = dict(env)
    if out.pop("PYTHONDONTWRITEBYTECODE", None) and "PYTHONPYCACHEPREFIX" not in out:
        home = out.get("TOLLGATE_HOME")
        folder = (
            Path(home, "cache", "pycache")
            if home
            else Path(tempfile.gettempdir(), f"tollgate-pycache-{os.getuid()}")
        )
        out["PYTHONPYCACHEPREFIX"] = str(folder)
    return out


class LocalLauncher:
    """Runs one attempt of ``job`` as a local process. ``stop()`` may be called from another thread or a
    signal handler (Airflow's on_kill) while ``run()`` is streaming."""

    def __init__(
        self,
        job: TrainingJob,
        *,
        extra_env: Mapping[str, str] | None = None,
        log: Callable[[str], Any] = print,
        python: str = sys.executable,
        cwd: str | None = None,
    ) -> None:
        self.job = job
        self.extra_env = dict(extra_env or {})
        self.log = log
        self.python = python
        self.cwd = cwd
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.RLock()  # re-entrant: stop() may run in a signal handler
        self._timers: list[threading.Timer] = []
        self._signals: list[tuple[float, str]] = []
        self._interrupted = False
        self._escalated = False
        self._stopped = False

    # ---- command and environment ---------------------------------------------------------------
    def command(self) -> list[str]:
        command = list(self.job.command)
        if command and command[0] in ("python", "python3"):
            command[0] = self.python  # the Airflow worker's interpreter, where tollgate is installed
        return [*command, *self.job.argv()]

    def environment(self) -> dict[str, str]:
        """The trainer's environment: an allow-list of the worker's (like the pod gets), never its secrets
        (signing-key Connection, JWT secret, fernet key, database URL), then the job's own variables."""
        env = trainer_environment(os.environ)
        env.update(self.job.env)
        env.update(self.extra_env)
        env = bytecode_cache(env)
        env["PYTHONUNBUFFERED"] = "1"
        if self.job.mlflow_uri:
            env["MLFLOW_TRACKING_URI"] = self.job.mlflow_uri
        return env

    # ---- run -----------------------------------------------------------------------------------
    def run(self, interruption: Interruption | None = None) -> LocalRunResult:
        command = self.command()
        self.log(
            f"Launching trainer (local process, grace {self.job.pod_grace_seconds} s): {' '.join(command)}"
        )
        if interruption:
            self.log(f"Spot interruption injected for this attempt: {interruption.describe()}")
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            cwd=self.cwd,
            text=True,
            bufsize=1,
            errors="replace",
            start_new_session=True,  # its own process group: signals reach the trainer and its children
        )
        with self._lock:
            self._proc = proc
        if interruption and interruption.after_seconds is not None:
            self._start_timer(interruption.after_seconds, lambda: self._interrupt(interruption))

        tail: deque[str] = deque(maxlen=40)
        resumed_from = resumed_ckpt = last_step = preempted_at = None
        first_progress_at = resumed_line_at = None
        target_step = interruption.at_step if interruption and interruption.at_step is not None else None
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                self.log(line)
                if match := PROGRESS.match(line):
                    last_step = int(match.group(1))
                    if first_progress_at is None:
                        first_progress_at = time.monotonic()
                    if target_step is not None and last_step >= (resumed_from or 0) + target_step:
                        target_step = None
                        self._interrupt(interruption)  # type: ignore[arg-type]
                elif match := RESUMED.match(line):
                    resumed_from = int(match.group(1))
                    resumed_ckpt = match.group(2)
                    resumed_line_at = time.monotonic()
                elif match := PREEMPTED.match(line):
                    preempted_at = int(match.group(1))
            exit_code = proc.wait()
        finally:
            for timer in self._timers:
                timer.cancel()
            if proc.poll() is None:  # the reader itself failed: never leave the trainer behind
                self._signal(signal.SIGKILL)
                proc.wait()
        ended = time.monotonic()
        return LocalRunResult(
            exit_code=exit_code,
            interrupted=self._interrupted,
            escalated=self._escalated,
            stopped=self._stopped,
            resumed_from_step=resumed_from,
            resumed_checkpoint=resumed_ckpt,
            last_step=last_step,
            preempted_at_step=preempted_at,
            signals=list(self._signals),
            started_at=started,
            resumed_line_at=resumed_line_at,
            first_progress_at=first_progress_at,
            ended_at=ended,
            tail=list(tail),
        )

    # ---- signals -------------------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        """Kubelet-style stop: SIGTERM the group, wait the pod grace, then SIGKILL. Blocks until exit."""
        with self._lock:
            proc = self._proc
            self._stopped = True
        if proc is None or proc.poll() is not None:
            return
        self.log(f"Stopping the trainer ({reason}): SIGTERM, SIGKILL after {self.job.pod_grace_seconds} s")
        self._signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self.job.pod_grace_seconds)
        except subprocess.TimeoutExpired:
            self._escalated = True
            self._signal(signal.SIGKILL)
            proc.wait()

    def _interrupt(self, interruption: Interruption) -> None:
        with self._lock:
            if self._interrupted or self._proc is None or self._proc.poll() is not None:
                return
            self._interrupted = True
        if interruption.sigkill:
            self.log("Injected spot interruption: SIGKILL (capacity lost without notice)")
            self._signal(signal.SIGKILL)
            return
        self.log(
            f"Injected spot interruption: SIGTERM (notice); SIGKILL in {self.job.pod_grace_seconds} s "
            "if the trainer has not exited"
        )
        self._signal(signal.SIGTERM)
        self._start_timer(self.job.pod_grace_seconds, self._escalate)

    def _escalate(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._escalated = True
            self.log("Grace period over: SIGKILL")
            self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None:
            return
        self._signals.append((time.monotonic(), sig.name))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _start_timer(self, seconds: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
