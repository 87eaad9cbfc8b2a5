"""SIGTERM handling with a real signal: deferred inside the loop, immediate outside, bounded by the grace."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tollgate.training import exit_codes
from tollgate.training.testing import child_env

pytestmark = pytest.mark.unit

SCRIPT = """
import os, signal, sys, time
from tollgate_torch.preemption import PreemptionGuard
from tollgate.training.errors import Preempted
guard = PreemptionGuard(grace_seconds=float(sys.argv[1]))
guard.install()
if sys.argv[2] == "hung-save":
    with guard.deferred():
        print("ready", flush=True)
        time.sleep(60)  # a checkpoint save that cannot finish within the grace period
elif sys.argv[2] == "loop":
    with guard.deferred():
        print("ready", flush=True)
        while not guard.requested:
            time.sleep(0.01)
        print("finished the step, saving", flush=True)
    sys.exit(0)
else:
    try:
        print("ready", flush=True)
        time.sleep(60)  # set-up: nothing to save
    except Preempted:
        print("preempted during set-up", flush=True)
        sys.exit(75)
"""


def _run(grace: str, mode: str) -> tuple[int, str, str, float]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, grace, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err, time.monotonic() - sent


def test_inside_the_loop_sigterm_only_sets_the_flag() -> None:
    rc, out, err, _ = _run("30", "loop")
    assert rc == 0 and "finished the step, saving" in out
    assert "SIGTERM received: saving and exiting within 30 s" in err


def test_outside_the_loop_sigterm_interrupts_at_once() -> None:
    rc, out, _, elapsed = _run("30", "setup")
    assert rc == exit_codes.PREEMPTED and "preempted during set-up" in out and elapsed < 10


def test_a_save_that_outlasts_the_grace_period_still_exits_preempted_in_time() -> None:
    rc, _, err, elapsed = _run("3", "hung-save")
    assert rc == exit_codes.PREEMPTED
    assert "grace period of 3 s is ending before the checkpoint completed" in err
    assert elapsed < 3.0  # the watchdog leaves 1 s before the kubelet's SIGKILL would come
