"""Start and stop services as whole process groups, and wait for them to answer.

Each service runs in its own session (``setsid``) so that stopping it with a signal to the group
also stops the children it forked (LocalExecutor workers, MLflow's job runner), and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


class ServiceError(RuntimeError):
    """A service did not start or answer; the message names it, the cause and its log."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for tests and ad-hoc stacks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_group(
    command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """Start ``command`` as the leader of a new process group, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, timeout: float = 20.0) -> None:
    """TERM the whole group, wait, then KILL whatever is left of it."""
    stop_groups([pgid], timeout)


def stop_groups(pgids: Sequence[int], timeout: float = 20.0) -> None:
    """TERM all groups at once, wait up to ``timeout``, then KILL what is left."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        alive = [pgid for pgid in pgids if group_alive(pgid)]
        for pgid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            for pgid in alive:
                _reap(pgid)
            alive = [pgid for pgid in alive if group_alive(pgid)]
            time.sleep(0.1)
        if not alive:
            return


def _reap(pid: int) -> None:
    """Collect the leader if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(log_path: Path, lines: int = 15) -> str:
    if not log_path.exists():
        return "(no log written)"
    text = log_path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_healthy(
    name: str, url: str, process: subprocess.Popen | None, log_path: Path, timeout: float = 120.0
) -> float:
    """Poll ``url`` until it answers 2xx; return seconds waited. Fail fast if the process dies."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if http_ok(url):
            return time.monotonic() - start
        if process is not None and process.poll() is not None:
            raise ServiceError(
                f"{name} exited with code {process.returncode} before answering on {url}.\n"
                f"Log: {log_path}\n--- last lines ---\n{log_tail(log_path)}"
            )
        time.sleep(0.5)
    raise ServiceError(
        f"{name} did not answer on {url} within {timeout:.0f} s.\n"
        f"Log: {log_path}\n--- last lines ---\n{log_tail(log_path)}"
    )


def wait_listening(
    name: str, port: int, process: subprocess.Popen | None, log_path: Path, timeout: float = 60.0
) -> float:
    """Wait until something accepts TCP connections on 127.0.0.1:``port`` (a server without HTTP)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return time.monotonic() - start
        if process is not None and process.poll() is not None:
            raise ServiceError(
                f"{name} exited with code {process.returncode} before listening on port {port}.\n"
                f"Log: {log_path}\n--- last lines ---\n{log_tail(log_path)}"
            )
        time.sleep(0.3)
    raise ServiceError(f"{name} not listening on port {port} within {timeout:.0f} s. Log: {log_path}")
