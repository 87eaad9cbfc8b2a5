"""Checkpoint store on a local folder: manifest with sha256, keep-last-K, verification and fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tollgate_torch.checkpoints import CheckpointStore

pytestmark = pytest.mark.unit


def _state(step: int) -> dict:
    return {"step": step, "w": torch.full((4,), float(step)), "rng": [3, list(range(5)), None]}


def test_save_lists_in_manifest_and_keeps_last_k(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), keep=2)
    for step in (10, 20, 30):
        entry, seconds = store.save(_state(step), step=step, epoch=0)
        assert seconds >= 0 and entry.name == f"ckpt-{step:08d}.pt"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [e["step"] for e in manifest["checkpoints"]] == [20, 30]
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-00000020.pt", "ckpt-00000030.pt"]
    assert all(len(e["sha256"]) == 64 and e["size"] > 0 for e in manifest["checkpoints"])
    restored = store.restore_latest()
    assert restored is not None and restored.entry.step == 30 and restored.skipped == []
    assert torch.equal(restored.state["w"], torch.full((4,), 30.0))


def test_corrupt_newest_falls_back_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = CheckpointStore(str(tmp_path), keep=3)
    for step in (10, 20):
        store.save(_state(step), step=step, epoch=0)
    newest = tmp_path / "ckpt-00000020.pt"
    data = bytearray(newest.read_bytes())
    data[100] ^= 1
    newest.write_bytes(bytes(data))
    restored = store.restore_latest()
    assert restored is not None and restored.entry.step == 10
    err = capsys.readouterr().err
    assert "ckpt-00000020.pt (step 20) failed verification: sha256" in err
    assert "falling back to the previous checkpoint" in err


def test_unlisted_or_partial_files_never_count(tmp_path: Path) -> None:
    """A checkpoint written but not yet in the manifest (killed in between) is ignored."""
    store = CheckpointStore(str(tmp_path), keep=3)
    store.save(_state(10), step=10, epoch=0)
    (tmp_path / "ckpt-00000020.pt").write_bytes(b"half a checkpoint")
    (tmp_path / ".ckpt-00000030.pt.tmp-123-abc").write_bytes(b"partial")
    restored = store.restore_latest()
    assert restored is not None and restored.entry.step == 10
    assert not list(tmp_path.glob(".*tmp-*"))  # stale temp files are cleaned up


def test_nothing_valid_means_fresh_start(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), keep=3)
    assert store.restore_latest() is None
    store.save(_state(10), step=10, epoch=0)
    (tmp_path / "ckpt-00000010.pt").unlink()
    assert store.restore_latest() is None


def test_an_older_attempt_cannot_claim_save_or_write_the_ledger_after_a_newer_one(tmp_path: Path) -> None:
    """Fencing by attempt number (the process-level test is tests/integration/test_training_fencing.py)."""
    from tollgate.training.errors import StaleAttempt

    old = CheckpointStore(str(tmp_path), keep=3)
    old.claim(1)
    old.save(_state(10), step=10, epoch=0)
    old.write_ledger({"attempts": [{"attempt": 1}]})
    new = CheckpointStore(str(tmp_path), keep=3)
    new.claim(2)
    new.write_ledger({"attempts": [{"attempt": 1}, {"attempt": 2}]})
    frozen = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    with pytest.raises(StaleAttempt, match=r"may not write checkpoint ckpt-00000020\.pt: attempt 2"):
        old.save(_state(20), step=20, epoch=0)
    with pytest.raises(StaleAttempt, match="attempt 1 may not write the attempt ledger"):
        old.write_ledger({"attempts": [{"attempt": 1}]})
    with pytest.raises(StaleAttempt, match="attempt 1 may not claim"):
        CheckpointStore(str(tmp_path)).claim(1)  # an older attempt that starts late
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == frozen

    new.save(_state(20), step=20, epoch=0)  # the owner writes on; its manifest carries its number
    assert json.loads((tmp_path / "manifest.json").read_text())["attempt"] == 2
    (tmp_path / "fence.json").unlink()  # even without the fence file, the manifest's number fences
    with pytest.raises(StaleAttempt):
        old.save(_state(30), step=30, epoch=0)
