"""The local platform's supervisor, with real processes: a crash after the minimum uptime is restarted, an
early crash and a clean exit are not, too many crashes give up, and a signal to the group stops it all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tollgate.platform.supervise import supervised

pytestmark = pytest.mark.unit

# A service that crashes (exit 3) on its first ``crashes`` starts after ``run_s`` seconds, then stays up
# until it is signalled (or exits 0 at once when ``crashes`` is negative). Each start appends to a file.
SERVICE = """
import pathlib, sys, time
starts = pathlib.Path(sys.argv[1]); crashes = int(sys.argv[2]); run_s = float(sys.argv[3])
starts.write_text(starts.read_text() + "x" if starts.exists() else "x")
if crashes < 0:
    sys.exit(0)
time.sleep(run_s)
if len(starts.read_text()) <= crashes:
    sys.exit(3)
time.sleep(600)
"""


def start(tmp_path: Path, crashes: int, run_s: float, *options: str) -> tuple[subprocess.Popen, Path, Path]:
    starts, log = tmp_path / "starts", tmp_path / "service.log"
    command = supervised(
        "test-service", [sys.executable, "-c", SERVICE, str(starts), str(crashes), str(run_s)]
    )
    command[command.index("--") : command.index("--")] = list(options)
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, starts, log


def starts_of(path: Path) -> int:
    return len(path.read_text()) if path.exists() else 0


def wait_for(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_crash_after_the_minimum_uptime_is_restarted_and_a_group_signal_stops_everything(tmp_path):
    proc, starts, log = start(tmp_path, 2, 1.0, "--min-uptime", "0.5", "--backoff", "0.2")
    try:
        wait_for(lambda: starts_of(starts) == 3)  # crashed twice, restarted twice
        time.sleep(1.5)  # the third start stays up
        assert proc.poll() is None and starts_of(starts) == 3
        text = log.read_text()
        assert text.count("exited with code 3") == 2 and "restarting in" in text, text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # as the platform stops a service
    assert proc.wait(timeout=30) != 0  # the service was stopped, not finished
    time.sleep(0.5)
    assert starts_of(starts) == 3  # and not restarted after the signal


def test_an_early_crash_is_not_restarted_it_is_a_configuration_error(tmp_path):
    proc, starts, log = start(tmp_path, 5, 0.0, "--min-uptime", "30")
    assert proc.wait(timeout=60) == 3 and starts_of(starts) == 1
    assert "not restarted" in log.read_text()


def test_a_clean_exit_ends_supervision(tmp_path):
    proc, starts, _ = start(tmp_path, -1, 0.0)
    assert proc.wait(timeout=60) == 0 and starts_of(starts) == 1


def test_too_many_crashes_give_up_with_the_service_s_code(tmp_path):
    proc, starts, log = start(
        tmp_path, 99, 0.6, "--min-uptime", "0.5", "--backoff", "0.1", "--max-restarts", "2"
    )
    assert proc.wait(timeout=60) == 3
    assert starts_of(starts) == 3 and "giving up" in log.read_text()
