"""Background checkpoint saves: snapshot frozen at submit, one save in flight, listed once complete."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from tollgate_torch import StaleAttempt
from tollgate_torch.background import BackgroundSaver
from tollgate_torch.checkpoints import CheckpointStore, Entry

pytestmark = pytest.mark.unit


def test_the_saved_state_is_the_one_at_submit_not_after_later_steps(tmp_path: Path) -> None:
    weights = torch.zeros(1000)
    moments = {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    saver = BackgroundSaver(CheckpointStore(str(tmp_path)))
    saver.submit({"w": weights, "optimizer": moments, "step": 10}, step=10, epoch=0)
    weights += 5.0  # the next optimizer steps change the live tensors in place
    moments["state"][0]["exp_avg"].mul_(7.0)
    moments["param_groups"][0]["lr"] = 0.05
    saver.wait()
    restored = CheckpointStore(str(tmp_path)).restore_latest()
    assert restored is not None and restored.entry.step == 10
    assert torch.equal(restored.state["w"], torch.zeros(1000))
    assert torch.equal(restored.state["optimizer"]["state"][0]["exp_avg"], torch.ones(3))
    assert restored.state["optimizer"]["param_groups"][0]["lr"] == 0.1


def test_listed_only_once_complete_and_never_two_writers(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), keep=3)
    release, reached = threading.Event(), threading.Event()
    stages: list[tuple[int, str]] = []

    def hook(entry: Entry, stage: str) -> None:
        stages.append((entry.step, stage))
        if entry.step == 10 and stage == "blob-written":
            reached.set()
            assert release.wait(30)

    store.write_hook = hook
    saver = BackgroundSaver(store)
    saver.submit({"w": torch.ones(4)}, step=10, epoch=0)
    assert reached.wait(30)
    # the blob is on disk under its name, but nobody may resume from it yet
    assert (tmp_path / "ckpt-00000010.pt").exists()
    assert CheckpointStore(str(tmp_path)).restore_latest() is None

    second = threading.Thread(target=saver.submit, args=({"w": torch.full((4,), 2.0)}, 20, 0))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # the next save waits for the one in flight
    assert all(step == 10 for step, _ in stages)
    release.set()
    second.join(30)
    saver.wait()
    assert [e.step for e in CheckpointStore(str(tmp_path)).entries()] == [10, 20]
    assert stages == [(10, "blob-half-written"), (10, "blob-written"), (20, "blob-half-written"),
                      (20, "blob-written")]  # fmt: skip


def test_a_background_failure_reaches_the_training_thread(tmp_path: Path) -> None:
    old = CheckpointStore(str(tmp_path), attempt=1)
    old.claim(1)
    saver = BackgroundSaver(old)
    saver.submit({"w": torch.ones(2)}, step=10, epoch=0)
    saver.wait()
    CheckpointStore(str(tmp_path)).claim(2)  # a newer attempt took over
    saver.submit({"w": torch.ones(2)}, step=20, epoch=0)
    with pytest.raises(StaleAttempt, match=r"attempt 1 may not write checkpoint ckpt-00000020\.pt"):
        saver.wait()
    saver.wait()  # raised once; the saver is usable (and empty) afterwards
    assert [e.step for e in CheckpointStore(str(tmp_path)).entries()] == [10]
