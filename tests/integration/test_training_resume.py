"""Exact resume: real trainer processes interrupted by real SIGTERM / SIGKILL end bit-identical.

Tiny data (3,000 rows: 2,400 trained on, 75 steps per epoch, 150 steps), checkpoints every 10 steps.
Interruption points are exact, not timed: the trainer stops itself (SIGSTOP) after a given step
(TOLLGATE_PAUSE_AFTER_STEP, test-only), the test sends the signal to the stopped process and lets
it continue, so a SIGKILL lands with no further step run and a SIGTERM is seen at the next check.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from tollgate.training import exit_codes
from tollgate.training.synthetic import write_parquet
from tollgate.training.testing import STARTED, Attempt, child_env, run_attempt, trainer_command

pytestmark = pytest.mark.integration

STEPS_PER_EPOCH, EPOCHS, EVERY = 75, 2, 10


def _args(data: Path, run: Path, run_id: str) -> list[str]:
    return [
        "--data-file", str(data),
        "--checkpoint-uri", str(run / "checkpoints"),
        "--output-uri", str(run / "model"),
        "--training-run-id", run_id,
        "--epochs", str(EPOCHS),
        "--batch-size", "32",
        "--checkpoint-every", str(EVERY),
        "--keep-checkpoints", "3",
        "--mlflow-uri", "",
        "--seed", "7",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(write_parquet(tmp_path_factory.mktemp("data") / "events.parquet", 3000, seed=3))


@pytest.fixture(scope="module")
def baseline(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run with the same seed and data."""
    run = tmp_path_factory.mktemp("baseline")
    attempt = run_attempt(_args(data, run, "baseline"), run / "stderr.log")
    assert attempt.returncode == exit_codes.SUCCESS, attempt.tail()
    assert attempt.resumed == (0, "none")
    assert attempt.steps_seen == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1))
    return run


def assert_bit_identical(run: Path, baseline: Path) -> None:
    ours = torch.load(run / "model" / "model.pt", weights_only=True)
    theirs = torch.load(baseline / "model" / "model.pt", weights_only=True)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].numpy().tobytes() == theirs[name].numpy().tobytes(), f"{name} differs"
    # the optimizer's moments too: the resumed run is the same run, not just a close one
    final = "ckpt-00000150.pt"
    a = torch.load(run / "checkpoints" / final, weights_only=True)["optimizer"]["state"]
    b = torch.load(baseline / "checkpoints" / final, weights_only=True)["optimizer"]["state"]
    for key in a:
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(a[key][moment], b[key][moment]), f"optimizer {key}.{moment} differs"
    ours_result = json.loads((run / "model" / "result.json").read_text())
    theirs_result = json.loads((baseline / "model" / "result.json").read_text())
    assert ours_result["metrics"] == theirs_result["metrics"]


def test_uninterrupted_baseline_learns(baseline: Path) -> None:
    result = json.loads((baseline / "model" / "result.json").read_text())
    assert result["steps"] == 150 and result["resumed_from"] is None and result["steps_redone"] == 0
    assert result["metrics"]["auc"] > 0.6, result["metrics"]  # the synthetic data has a real signal
    assert sorted(p.name for p in (baseline / "checkpoints").glob("ckpt-*.pt")) == [
        "ckpt-00000130.pt",
        "ckpt-00000140.pt",
        "ckpt-00000150.pt",
    ]  # keep-last-3


def test_sigterm_sigkill_and_corrupt_checkpoints_resume_bit_identical(
    data: Path, baseline: Path, tmp_path: Path
) -> None:
    args = _args(data, tmp_path, "interrupted")

    def attempt(n: int, **kw) -> Attempt:
        return run_attempt(args, tmp_path / f"attempt{n}.log", **kw)

    # 1. SIGTERM before the first periodic checkpoint: saved at the next step, nothing lost.
    a1 = attempt(1, pause_at=5, sig=signal.SIGTERM)
    assert a1.returncode == exit_codes.PREEMPTED, a1.tail()
    term_step, term_ckpt, _ = a1.preempted
    assert term_step == a1.last_step == 6 and term_ckpt == "ckpt-00000006.pt"

    # 2. resumes exactly there; SIGKILL mid-interval: only the steps since the last checkpoint are lost.
    a2 = attempt(2, pause_at=37, sig=signal.SIGKILL)
    assert a2.resumed == (term_step, term_ckpt)
    assert a2.returncode == -signal.SIGKILL
    killed_at = a2.last_step
    assert killed_at == 37

    # 3. resumes from the last periodic checkpoint; SIGTERM at the epoch boundary (seen after the epoch).
    a3 = attempt(3, pause_at=STEPS_PER_EPOCH, sig=signal.SIGTERM)
    assert a3.resumed == (30, "ckpt-00000030.pt")
    assert a3.returncode == exit_codes.PREEMPTED, a3.tail()
    boundary_step, boundary_ckpt, _ = a3.preempted
    assert boundary_step == a3.last_step == STEPS_PER_EPOCH

    # 4. resumes in epoch 2; SIGKILL again.
    a4 = attempt(4, pause_at=113, sig=signal.SIGKILL)
    assert a4.resumed == (boundary_step, boundary_ckpt)
    assert a4.returncode == -signal.SIGKILL
    assert a4.last_step == 113

    # 5. the newest checkpoints went bad while nobody ran: the newest is truncated (an interrupted
    #    copy), the one before has a flipped byte (bit rot). The resume falls back to the third.
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("ckpt-*.pt")) == [
        "ckpt-00000090.pt",
        "ckpt-00000100.pt",
        "ckpt-00000110.pt",
    ]
    newest = ckpts / "ckpt-00000110.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    before = ckpts / "ckpt-00000100.pt"
    payload = bytearray(before.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    before.write_bytes(bytes(payload))

    a5 = attempt(5)
    assert a5.returncode == exit_codes.SUCCESS, a5.tail()
    assert a5.resumed == (90, "ckpt-00000090.pt")
    assert "ckpt-00000110.pt (step 110) failed verification: size" in a5.stderr
    assert "truncated" in a5.stderr
    assert "ckpt-00000100.pt (step 100) failed verification: sha256" in a5.stderr
    assert a5.steps_seen == list(range(91, 151))

    assert_bit_identical(tmp_path, baseline)
    result = json.loads((tmp_path / "model" / "result.json").read_text())
    assert result["resumed_from"] == "ckpt-00000090.pt"
    assert result["attempts"] == 5 and result["preemptions"] == 4
    # lost work = steps past the checkpoint each attempt resumed from; SIGTERM loses none
    assert result["steps_redone"] == (killed_at - 30) + (a4.last_step - 90)
    ledger = json.loads((tmp_path / "checkpoints" / "progress.json").read_text())
    assert [a["outcome"] for a in ledger["attempts"]] == [
        "preempted",
        "killed",
        "preempted",
        "killed",
        "succeeded",
    ]


def test_sigterm_during_setup_exits_preempted_without_checkpoint(data: Path, tmp_path: Path) -> None:
    """The notice can come before the first step (e.g. while importing torch and reading data): exit 75
    at once. The signal goes right after the trainer's readiness line (its SIGTERM handler is installed),
    before the seconds of imports and data loading that precede any step."""
    proc = subprocess.Popen(
        trainer_command(_args(data, tmp_path, "early")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().rstrip("\n")
    assert STARTED.match(first), first
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=120)
    out = first + "\n" + rest
    assert proc.returncode == exit_codes.PREEMPTED, err[-2000:]
    assert "TOLLGATE_PREEMPTED step=0 checkpoint=none" in out
    assert "TOLLGATE_RESUMED" not in out  # stopped during set-up, before the checkpoint folder was read
    assert "TOLLGATE_PROGRESS" not in out
    assert not list((tmp_path / "checkpoints").glob("ckpt-*.pt"))


def test_kills_and_a_sigterm_during_background_saves_resume_bit_identical(
    data: Path, baseline: Path, tmp_path: Path
) -> None:
    """Checkpoints are written by a background worker while training goes on. The trainer stops itself
    (TOLLGATE_PAUSE_DURING_SAVE, test-only) while the worker writes a given checkpoint: half of the blob in
    its temp file, or the blob complete but not yet in the manifest; the test then sends the signal."""
    args = _args(data, tmp_path, "killed-mid-save")
    ckpts = tmp_path / "checkpoints"

    def attempt(n: int, **kw) -> Attempt:
        return run_attempt(args, tmp_path / f"attempt{n}.log", **kw)

    def listed() -> list[int]:
        return [c["step"] for c in json.loads((ckpts / "manifest.json").read_text())["checkpoints"]]

    # 1. SIGTERM while checkpoint 40 is half written: that save completes, the step the loop was on is
    #    saved too, exit 75 within the grace period; no step lost.
    a1 = attempt(1, pause_during_save="40:blob-half-written", sig=signal.SIGTERM)
    assert a1.returncode == exit_codes.PREEMPTED, a1.tail()
    term_step, term_ckpt, _ = a1.preempted
    assert term_step == a1.last_step > 40 and term_ckpt == f"ckpt-{term_step:08d}.pt"
    # every 10 steps, the newest 3 kept: the loop may have reached step 50 (and queued its save behind 40)
    # before the signal, on a busy machine
    assert 40 in listed() and listed() == [*range(10, term_step, 10), term_step][-3:]
    assert a1.signal_sent_at is not None and a1.exited_at - a1.signal_sent_at < 30

    # 2. resumes there; SIGKILL with checkpoint 80 half written: a partial temp file, not listed.
    a2 = attempt(2, pause_during_save="80:blob-half-written", sig=signal.SIGKILL)
    assert a2.resumed == (term_step, term_ckpt)
    assert a2.returncode == -signal.SIGKILL
    assert listed()[-1] == 70 and list(ckpts.glob(".ckpt-00000080.pt.tmp-*"))

    # 3. resumes from 70 (the partial write is removed); SIGKILL with blob 120 in place but unlisted.
    a3 = attempt(3, pause_during_save="120:blob-written", sig=signal.SIGKILL)
    assert a3.resumed == (70, "ckpt-00000070.pt")
    assert "removed 1 partial write(s)" in a3.stderr
    assert a3.returncode == -signal.SIGKILL
    assert listed()[-1] == 110 and (ckpts / "ckpt-00000120.pt").exists()

    # 4. the unlisted blob never counts: resumes from 110 and ends exactly like the uninterrupted run.
    a4 = attempt(4)
    assert a4.returncode == exit_codes.SUCCESS, a4.tail()
    assert a4.resumed == (110, "ckpt-00000110.pt")
    assert a4.steps_seen == list(range(111, 151))
    assert_bit_identical(tmp_path, baseline)
    assert listed() == [130, 140, 150]
    ledger = json.loads((ckpts / "progress.json").read_text())
    assert [a["outcome"] for a in ledger["attempts"]] == ["preempted", "killed", "killed", "succeeded"]
