"""The recovery path from a spot notice to training again: the dataset cache keyed by DVC's content hash,
MLflow opened beside the first steps, and the split of a recovery read from the task logs (the retry
delay is tested on the DAG, tests/dags/test_train_retry_policy.py)."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tollgate.launch.recovery import PHASES, RecoveryNotFound, TryTimes, split
from tollgate.training import data_cache
from tollgate.training.tracking import NullTracker, OpeningTracker

pytestmark = pytest.mark.unit


# ---- dataset cache --------------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _repo_with_dvc_file(root: Path, payload: bytes) -> tuple[Path, str]:
    """A git repository whose ``data/d.parquet.dvc`` records ``payload``'s md5 as ``dvc add`` writes it."""
    repo = root / "repo"
    (repo / "data").mkdir(parents=True)
    _git(repo, "init", "-q")
    md5 = hashlib.md5(payload).hexdigest()
    (repo / "data" / "d.parquet.dvc").write_text(
        f"outs:\n- md5: {md5}\n  size: {len(payload)}\n  hash: md5\n  path: d.parquet\n"
    )
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "v1")
    return repo, _git(repo, "rev-parse", "HEAD").strip()


def test_dataset_cache_reads_dvc_once_then_serves_verified_bytes(tmp_path):
    payload = b"PAR1 the curated dataset bytes PAR1"
    repo, rev = _repo_with_dvc_file(tmp_path, payload)
    reads: list[tuple[str, str, str]] = []

    def from_dvc(r: str, v: str, p: str) -> bytes:  # stands in for dvc.api.open (counted)
        reads.append((r, v, p))
        return payload

    cache = tmp_path / "cache"
    first = data_cache.read_through(str(cache), str(repo), rev, "data/d.parquet", from_dvc)
    second = data_cache.read_through(str(cache), str(repo), rev, "data/d.parquet", from_dvc)
    assert first == (payload, "dvc, cached") and second == (payload, "cache")
    assert len(reads) == 1
    cached = cache / f"{hashlib.md5(payload).hexdigest()}.parquet"
    assert cached.read_bytes() == payload

    cached.write_bytes(b"damaged")  # a damaged cache entry is never used: read again and replaced
    assert data_cache.read_through(str(cache), str(repo), rev, "data/d.parquet", from_dvc) == (
        payload,
        "dvc, cached",
    )
    assert len(reads) == 2 and cached.read_bytes() == payload

    # no cache folder, a rev without the file, a repository that is not a local checkout: always DVC
    assert data_cache.read_through(None, str(repo), rev, "data/d.parquet", from_dvc)[1] == "dvc"
    assert data_cache.read_through(str(cache), str(repo), rev, "data/other.parquet", from_dvc)[1] == "dvc"
    assert (
        data_cache.read_through(str(cache), "https://example.invalid/x.git", rev, "d", from_dvc)[1] == "dvc"
    )
    assert len(reads) == 5


def test_dataset_cache_is_on_by_default_on_the_local_platform(tmp_path):
    from tollgate.training.settings import parse

    base = [
        "--data-file",
        "x.parquet",
        "--checkpoint-uri",
        "c",
        "--output-uri",
        "o",
        "--training-run-id",
        "r",
    ]
    assert parse(base, environ={"TOLLGATE_HOME": str(tmp_path)}).data_cache == str(
        tmp_path / "cache" / "datasets"
    )
    assert parse(base, environ={}).data_cache is None
    assert parse([*base, "--data-cache", ""], environ={"TOLLGATE_HOME": str(tmp_path)}).data_cache == ""


# ---- MLflow opened beside the first steps ---------------------------------------------------------
class _Recorder(NullTracker):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.flushed = 0

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        self.steps.append(step)

    def flush(self) -> None:
        self.flushed += 1


def test_opening_tracker_buffers_steps_until_open_and_flush_waits_for_it():
    gate, recorder = threading.Event(), _Recorder()

    def slow_open() -> _Recorder:
        gate.wait(5)
        return recorder

    tracker = OpeningTracker(slow_open)
    tracker.log_step(1, {"loss": 1.0})  # training goes on while MLflow opens
    tracker.log_step(2, {"loss": 0.9})
    assert recorder.steps == []
    gate.set()
    tracker.flush()  # a checkpoint's flush waits for the open run and sends every step, in order
    tracker.log_step(3, {"loss": 0.8})
    assert recorder.steps == [1, 2, 3] and recorder.flushed == 1


def test_opening_tracker_raises_the_open_error_at_the_first_flush():
    def broken() -> NullTracker:
        raise RuntimeError("MLflow tracking server at http://x is not usable")

    tracker = OpeningTracker(broken)
    tracker.log_step(1, {"loss": 1.0})
    with pytest.raises(RuntimeError, match="not usable"):
        tracker.flush()
    with pytest.raises(RuntimeError, match="not usable"):
        tracker.end("FAILED")


# ---- the split of a recovery, from timestamped log lines --------------------------------------------
def test_recovery_split_adds_up_and_names_a_missing_line():
    t0 = datetime(2026, 11, 29, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    first_log = [
        (at(0.0), "TOLLGATE_PROGRESS step=20 epoch=1"),
        (
            at(0.0),
            "Injected spot interruption: SIGTERM (notice); SIGKILL in 40 s if the trainer has not exited",
        ),
        (at(0.3), "TOLLGATE_PREEMPTED step=20 checkpoint=ckpt-00000020.pt save_seconds=0.010"),
    ]
    retry_log = [
        (at(2.5), "Launching trainer (local process, grace 40 s): python -m tollgate.training"),
        (at(6.0), "TOLLGATE_RESUMED from_step=20 checkpoint=ckpt-00000020.pt"),
        (at(6.0), "TOLLGATE_TIMINGS imports_s=2.500 data_s=0.100 prepare_s=0.300 restore_s=0.050"),
        (at(6.2), "TOLLGATE_PROGRESS step=21 epoch=1"),
    ]
    first = TryTimes(queued=at(-30), started=at(-29), ended=at(0.5))
    retry = TryTimes(queued=at(1.5), started=at(2.0), ended=at(20))
    got = split(first_log, first, retry_log, retry)
    assert got["total"] == pytest.approx(6.2)
    assert sum(got[p] for p in PHASES) == pytest.approx(got["total"])
    assert got["scheduling"] == pytest.approx(1.0) and got["executor_start"] == pytest.approx(0.5)
    assert got["trainer_imports"] == pytest.approx(3.5 - 0.45) and got["first_step"] == pytest.approx(0.2)
    assert got["preempted_at_step"] == got["resumed_from_step"] == 20
    with pytest.raises(RecoveryNotFound, match="sigterm_at_step"):
        split(first_log[:1], first, retry_log, retry)


# ---- bytecode: the retry reuses what the first attempt compiled ----------------------------------------
def test_trainer_keeps_a_private_bytecode_cache_when_the_worker_writes_none(tmp_path):
    from tollgate.launch.local import bytecode_cache

    worker = {"PYTHONDONTWRITEBYTECODE": "1", "TOLLGATE_HOME": str(tmp_path), "PATH": "/bin"}
    assert bytecode_cache(worker) == {
        "TOLLGATE_HOME": str(tmp_path),
        "PATH": "/bin",
        "PYTHONPYCACHEPREFIX": str(tmp_path / "cache" / "pycache"),
    }
    chosen = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/mine"}
    assert bytecode_cache(chosen) == {"PYTHONPYCACHEPREFIX": "/mine"}  # a prefix already chosen is kept
    assert bytecode_cache({"PATH": "/bin"}) == {"PATH": "/bin"}  # bytecode written as usual: nothing to do
