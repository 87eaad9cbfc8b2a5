"""The production shape: dataset read by DVC rev from an S3 remote, checkpoints and model on S3.

Real git, real DVC (remote on moto_server, a real S3 HTTP endpoint), real trainer processes and a
real SIGTERM. No cluster is needed: the trainer is the same command a pod runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import torch

from tollgate.data import schema
from tollgate.data.generator import generate
from tollgate.training import exit_codes
from tollgate.training.testing import run_attempt

pytestmark = pytest.mark.integration

DVC = str(Path(sys.executable).parent / "dvc")
BUCKET = "tollgate-training-test"


def _sh(cwd: Path, *cmd: str) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()


@pytest.fixture(scope="module")
def data_repo(moto_s3, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A git + DVC repository whose tag ``v1`` holds the curated dataset, pushed to an S3 remote."""
    boto3.client("s3", endpoint_url=moto_s3.url).create_bucket(Bucket=BUCKET)
    repo = tmp_path_factory.mktemp("data-repo")
    _sh(repo, "git", "init", "-q", "-b", "main")
    _sh(repo, "git", "config", "user.email", "test@tollgate.local")
    _sh(repo, "git", "config", "user.name", "tollgate tests")
    _sh(repo, DVC, "init", "-q")
    _sh(repo, DVC, "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc")
    _sh(repo, DVC, "remote", "modify", "storage", "endpointurl", moto_s3.url)
    target = repo / schema.CURATED_PATH
    target.parent.mkdir(parents=True)
    generate("2025-03-01", rows=4000, seed=3).to_parquet(target, index=False)
    payload = target.read_bytes()
    _sh(repo, DVC, "add", "-q", schema.CURATED_PATH)
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "commit", "-q", "-m", "dataset v1")
    _sh(repo, "git", "tag", "v1")
    _sh(repo, DVC, "push", "-q")
    # The workspace copy and DVC's local cache are removed: training must pull from the S3 remote.
    target.unlink()
    subprocess.run(["rm", "-rf", str(repo / ".dvc" / "cache")], check=True)
    return repo, payload


def _args(repo: Path, rev: str, run_id: str) -> list[str]:
    return [
        "--data-repo", str(repo), "--data-rev", rev,
        "--checkpoint-uri", f"s3://{BUCKET}/checkpoints/{run_id}",
        "--output-uri", f"s3://{BUCKET}/models/{run_id}",
        "--training-run-id", run_id,
        "--epochs", "2", "--batch-size", "128", "--checkpoint-every", "10", "--mlflow-uri", "",
    ]  # fmt: skip


def test_trains_from_a_dvc_rev_with_checkpoints_on_s3(data_repo, moto_s3, tmp_path: Path) -> None:
    repo, payload = data_repo
    s3 = boto3.client("s3", endpoint_url=moto_s3.url)
    args = _args(repo, "v1", "s3run")
    first = run_attempt(
        args, tmp_path / "a1.log", env={"TOLLGATE_STEP_DELAY_SECONDS": "0.05"}, interrupt_at=14
    )
    assert first.returncode == exit_codes.PREEMPTED, first.tail()
    step, name, _ = first.preempted
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="checkpoints/s3run/manifest.json")["Body"].read())
    assert manifest["checkpoints"][-1]["name"] == name and manifest["checkpoints"][-1]["step"] == step
    blob = s3.get_object(Bucket=BUCKET, Key=f"checkpoints/s3run/{name}")["Body"].read()
    assert hashlib.sha256(blob).hexdigest() == manifest["checkpoints"][-1]["sha256"]

    second = run_attempt(args, tmp_path / "a2.log")
    assert second.returncode == exit_codes.SUCCESS, second.tail()
    assert second.resumed == (step, name)

    result = json.loads(s3.get_object(Bucket=BUCKET, Key="models/s3run/result.json")["Body"].read())
    assert result["dataset"] == {
        "repo": str(repo),
        "rev": "v1",
        "path": schema.CURATED_PATH,
        "content_hash": hashlib.sha256(payload).hexdigest(),
    }
    assert result["resumed_from"] == name and result["steps"] == 2 * 25 and result["steps_redone"] == 0
    weights = s3.get_object(Bucket=BUCKET, Key="models/s3run/model.pt")["Body"].read()
    state = torch.load(io.BytesIO(weights), weights_only=True)
    assert all(torch.isfinite(t).all() for t in state.values())
    assert len(manifest["checkpoints"]) <= 3


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"--data-rev": "v9-does-not-exist"}, "dataset revision 'v9-does-not-exist' not found"),
        ({"--data-path": "data/missing.parquet"}, "'data/missing.parquet' does not exist at revision"),
    ],
)
def test_bad_dataset_reference_is_bad_input(
    data_repo, tmp_path: Path, override: dict[str, str], expected: str
) -> None:
    repo, _ = data_repo
    args = [
        "--data-repo", str(repo), "--data-rev", "v1",
        "--checkpoint-uri", str(tmp_path / "ckpt"), "--output-uri", str(tmp_path / "out"),
        "--training-run-id", "bad", "--mlflow-uri", "",
    ]  # fmt: skip
    for flag, value in override.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    attempt = run_attempt(args, tmp_path / "bad.log")
    assert attempt.returncode == exit_codes.BAD_INPUT, attempt.tail()
    assert expected in attempt.stderr
    assert "Traceback" not in attempt.stderr
