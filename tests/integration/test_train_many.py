"""``tests/fixtures/train_many.py`` (the signed-model fixture's trainer: several runs in one interpreter)
writes the same model files as ``python -m tollgate.training`` in a process of its own, also for a run that
follows another one in the same interpreter (nothing of the first run leaks into the second's weights)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.models import REPO_ROOT, TRAIN_MANY
from tollgate.data.generator import generate, to_parquet_bytes
from tollgate.training.testing import child_env

pytestmark = pytest.mark.integration

MODEL_FILES = ("model.pt", "model_config.json")


def args(work: Path, data: Path, name: str, seed: int, quality: str) -> list[str]:
    return [
        "--data-file", str(data), "--checkpoint-uri", str(work / "ckpt" / name),
        "--output-uri", str(work / "models" / name), "--training-run-id", name, "--seed", str(seed),
        "--epochs", "1", "--quality", quality, "--mlflow-uri", "", "--checkpoint-every", "100",
    ]  # fmt: skip


def digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in MODEL_FILES}


def train_many(runs: Path, *each: list[str]) -> subprocess.CompletedProcess:
    runs.write_text(json.dumps(list(each)))
    command = [sys.executable, *TRAIN_MANY, str(runs)]
    env, cwd = child_env(), REPO_ROOT  # run as a module from the repository root
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_runs_in_one_interpreter_write_the_files_their_own_processes_write(tmp_path):
    data = tmp_path / "day.parquet"
    data.write_bytes(to_parquet_bytes(generate("2026-03-01", rows=1500, seed=7)))
    alone, together = tmp_path / "alone", tmp_path / "together"

    single = subprocess.run(
        [sys.executable, "-m", "tollgate.training", *args(alone, data, "b", 3, "slow")],
        capture_output=True, text=True, env=child_env(), timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    runs = tmp_path / "runs.json"
    many = train_many(runs, args(together, data, "a", 1, "normal"), args(together, data, "b", 3, "slow"))
    assert many.returncode == 0, many.stderr[-3000:]
    assert "run 2/2 exited 0" in many.stderr

    # run b came second in the shared interpreter, after run a trained another seed and quality
    assert digests(together / "models" / "b") == digests(alone / "models" / "b")
    assert digests(together / "models" / "a") != digests(together / "models" / "b")
    result = json.loads((together / "models" / "b" / "result.json").read_text())
    assert result["metrics"] == json.loads((alone / "models" / "b" / "result.json").read_text())["metrics"]


def test_a_failing_run_stops_the_batch_with_its_exit_code(tmp_path):
    from tollgate.training import exit_codes

    data = tmp_path / "unused.parquet"
    bad = args(tmp_path, data, "a", 1, "bogus")  # an unknown quality: refused before torch loads
    many = train_many(tmp_path / "runs.json", bad, args(tmp_path, data, "b", 1, "normal"))
    assert many.returncode == exit_codes.BAD_INPUT, many.stderr[-3000:]
    assert "run 1/2 exited" in many.stderr and "run 2/2" not in many.stderr
