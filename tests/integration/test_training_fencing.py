"""Fencing: a stale training attempt that wakes up after a newer one took over writes nothing.

Two real trainer processes share one checkpoint folder, as two pods of one training run would if an earlier
pod outlived its try (a node that lost contact). Attempt 1 stops itself after step 15 (the test-only
TOLLGATE_PAUSE_AFTER_STEP: a frozen process, not a timed sleep); attempt 2 claims the folder, resumes from
attempt 1's checkpoint and finishes. Then attempt 1 continues: its next checkpoint write is refused with a
clear error, it exits SUPERSEDED, and the manifest, the attempt ledger and the model stay exactly as
attempt 2 left them.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
from pathlib import Path

import pytest

from tollgate.training import exit_codes
from tollgate.training.synthetic import write_parquet
from tollgate.training.testing import PAUSE_ENV, PAUSED, child_env, run_attempt, trainer_command, wait_stopped

pytestmark = pytest.mark.integration


def _args(data: Path, run: Path) -> list[str]:
    return [
        "--data-file", str(data),
        "--checkpoint-uri", str(run / "checkpoints"),
        "--output-uri", str(run / "model"),
        "--training-run-id", "fenced",
        "--epochs", "1",
        "--batch-size", "32",
        "--checkpoint-every", "10",
        "--keep-checkpoints", "3",
        "--mlflow-uri", "",
        "--seed", "7",
    ]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file, but the per-attempt heartbeats: each attempt beats its own file every step."""
    files = (p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith("heartbeat-"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_stale_attempt_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    data = Path(write_parquet(tmp_path / "events.parquet", 3000, seed=3))
    args = _args(data, tmp_path)
    stale = subprocess.Popen(
        trainer_command(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env({"TOLLGATE_ATTEMPT": "1", PAUSE_ENV: "15"}),
    )
    try:
        assert stale.stdout is not None
        for line in stale.stdout:  # attempt 1 wrote checkpoint 10, ran to step 15 and froze
            if PAUSED.match(line.strip()):
                wait_stopped(stale.pid)
                break
        else:
            raise AssertionError(f"attempt 1 ended before pausing: {stale.stderr.read()[-2000:]}")

        newer = run_attempt(args, tmp_path / "attempt2.log", env={"TOLLGATE_ATTEMPT": "2"})
        assert newer.returncode == exit_codes.SUCCESS, newer.tail()
        assert newer.resumed == (10, "ckpt-00000010.pt")  # attempt 1's checkpoint, taken over
        checkpoints, model = tmp_path / "checkpoints", tmp_path / "model"
        before = _snapshot(checkpoints), _snapshot(model)

        stale.send_signal(signal.SIGCONT)  # the stale pod's node comes back
        out, err = stale.communicate(timeout=120)
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()

    assert stale.returncode == exit_codes.SUPERSEDED, err[-2000:]
    assert (
        "attempt 1 may not write checkpoint ckpt-00000020.pt: attempt 2 of this training run has taken over"
        in err
    )
    assert "TOLLGATE_PROGRESS step=20" in out  # it trained on, and was stopped at its first write
    after = _snapshot(checkpoints), _snapshot(model)
    assert after == before  # manifest, ledger, fence, checkpoints and model: byte for byte
    manifest = json.loads((checkpoints / "manifest.json").read_text())
    assert manifest["attempt"] == 2
    assert [c["name"] for c in manifest["checkpoints"]] == [
        "ckpt-00000060.pt",
        "ckpt-00000070.pt",
        "ckpt-00000075.pt",
    ]
    assert not (checkpoints / "ckpt-00000020.pt").exists()  # refused before the blob was written
    ledger = json.loads((checkpoints / "progress.json").read_text())
    assert [(a["attempt"], a["outcome"]) for a in ledger["attempts"]] == [(1, "killed"), (2, "succeeded")]
