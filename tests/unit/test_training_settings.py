"""Trainer arguments: args, then TOLLGATE_* env, then defaults; bad input names the fix."""

from __future__ import annotations

import pytest

from tollgate.data import schema
from tollgate.training.errors import BadInput
from tollgate.training.settings import parse

pytestmark = pytest.mark.unit

REQUIRED = ["--checkpoint-uri", "/c", "--output-uri", "/o", "--training-run-id", "r1"]


def test_defaults_match_the_contract() -> None:
    s = parse([*REQUIRED, "--data-file", "x.parquet"], environ={})
    assert (s.seed, s.epochs, s.batch_size, s.lr, s.embedding_dim) == (42, 3, 256, 0.003, 8)
    assert s.hidden_units == (64, 32) and s.checkpoint_every == 50 and s.keep_checkpoints == 3
    assert s.grace_seconds == 30.0 and s.experiment == "tollgate-ctr" and s.holdout_fraction == 0.2
    assert s.quality == "normal" and s.data_path == schema.CURATED_PATH and s.mlflow_uri == ""


def test_env_fills_in_and_args_win() -> None:
    env = {
        "TOLLGATE_CHECKPOINT_URI": "s3://b/ckpt",
        "TOLLGATE_OUTPUT_URI": "s3://b/out",
        "TOLLGATE_TRAINING_RUN_ID": "from-env",
        "TOLLGATE_DATA_REPO": "/repo",
        "TOLLGATE_DATA_REV": "v1",
        "TOLLGATE_EPOCHS": "5",
        "TOLLGATE_HIDDEN_UNITS": "16,8,4",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "TOLLGATE_AIRFLOW_DAG_ID": "train_model",
        "TOLLGATE_ATTEMPT": "2",
    }
    s = parse(["--epochs", "7", "--training-run-id", "from-arg"], environ=env)
    assert s.epochs == 7 and s.training_run_id == "from-arg"
    assert s.checkpoint_uri == "s3://b/ckpt" and s.data_rev == "v1" and s.hidden_units == (16, 8, 4)
    assert s.mlflow_uri == "http://mlflow:5000"
    assert s.airflow == {"TOLLGATE_AIRFLOW_DAG_ID": "train_model", "TOLLGATE_ATTEMPT": "2"}
    # an explicit empty MLflow URI turns tracking off even when the env has one
    assert parse(["--mlflow-uri", ""], environ=env).mlflow_uri == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output-uri", "/o", "--training-run-id", "r", "--data-file", "x"], "missing --checkpoint-uri"),
        ([*REQUIRED], "no dataset given: pass --data-repo and --data-rev"),
        ([*REQUIRED, "--data-repo", "/r"], "no dataset given"),
        ([*REQUIRED, "--data-file", "x", "--data-rev", "v1"], "either --data-file or --data-repo"),
        ([*REQUIRED, "--data-file", "x", "--epochs", "three"], "--epochs must be a int"),
        ([*REQUIRED, "--data-file", "x", "--epochs", "0"], "--epochs must be a positive integer"),
        ([*REQUIRED, "--data-file", "x", "--hidden-units", "64,,x"], "--hidden-units must be"),
        ([*REQUIRED, "--data-file", "x", "--holdout-fraction", "1.5"], "--holdout-fraction must be"),
        ([*REQUIRED, "--data-file", "x", "--quality", "awful"], "--quality must be one of normal, degraded"),
        ([*REQUIRED, "--data-file", "x", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_input_names_the_problem(argv: list[str], message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        parse(argv, environ={})
