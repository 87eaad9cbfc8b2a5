"""Every default of Tollgate in one module.

Deployment choices are Airflow Variables (see ``airflow_settings.yaml``); this module holds the
names of those Variables and the embedded defaults they fall back to, so a reader finds every
default here. Library functions take explicit arguments; DAG tasks resolve them with ``setting()``.
Nothing here imports Airflow: the training container imports this module too.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def state_dir() -> Path:
    """The one git-ignored folder that holds all local state (``$TOLLGATE_HOME``, default ``.tollgate``)."""
    return Path(os.environ.get("TOLLGATE_HOME") or REPO_ROOT / ".tollgate").resolve()


# Airflow Variable name -> embedded default. "{state}" is replaced by state_dir().
VARIABLE_DEFAULTS: dict[str, str] = {
    # Object-storage root for reports, quarantine and checkpoints: a local folder or s3://bucket/prefix.
    "tollgate_storage_root": "{state}/storage",
    # Where the upstream system drops daily partitions: a local folder or s3://bucket/prefix.
    "tollgate_landing_uri": "{state}/landing",
    # Git + DVC data repository holding the curated training set, and its DVC remote.
    "tollgate_data_repo": "{state}/data-repo",
    "tollgate_dvc_remote": "{state}/dvc-remote",
    # How training is launched: "local" (child process) or "kubernetes" (spot pod).
    "tollgate_launch_backend": "local",
    "tollgate_training_image": "ghcr.io/tollgate-mlops/tollgate-training:0.1.0",
    "tollgate_registered_model": "tollgate-ctr",
}

MLFLOW_CONN_ID = "mlflow_default"
AWS_CONN_ID = "aws_default"
SIGNING_CONN_ID = "tollgate_signing"
SPOT_POOL = "spot_training"


def default_for(name: str) -> str:
    """The embedded default of a Variable, with the state folder filled in."""
    return VARIABLE_DEFAULTS[name].format(state=state_dir())


def mlflow_tracking_uri() -> str:
    """MLflow tracking URI outside Airflow (CLI, tests, the training container)."""
    return os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
