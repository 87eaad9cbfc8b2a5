"""Log the trainer's output to MLflow as a pyfunc model, and sign the logged files in place.

The pyfunc is logged into the training run (so run, metrics and model stay linked). Then the stored
files are downloaded exactly as MLflow keeps them, ``provenance.json`` is written beside them, the whole
folder is signed into ``model.sig``, and those two files are uploaded to the same logged model. What is
signed is therefore byte for byte what the registry serves.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollgate.config import REPO_ROOT
from tollgate.registry import names, provenance
from tollgate.registry.keys import SigningKey
from tollgate.registry.signing import SignatureInfo, sign_model_dir

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel

log = logging.getLogger(__name__)

MODEL_NAME_IN_RUN = "model"
# Distributions the pyfunc needs at load time; pinned to what is installed where it was logged.
PYFUNC_DISTRIBUTIONS = ("mlflow", "torch", "numpy", "pandas", "pyarrow")
INCLUDE = REPO_ROOT / "include"


def pip_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    pinned = [f"{dist}=={importlib.metadata.version(dist)}" for dist in PYFUNC_DISTRIBUTIONS]
    return pinned + [req for req in extra if req not in pinned]


def stage_code(dest: Path, code_paths: tuple[Path, ...]) -> list[Path]:
    """Copy the example's code paths (files or folders under include/) into ``dest``, keeping their place
    in the package tree (no caches); returns the top-level packages staged, for MLflow's code_paths."""
    tops: set[Path] = set()
    for src in code_paths:
        try:
            rel = Path(src).resolve().relative_to(INCLUDE.resolve())
        except ValueError:
            raise ValueError(
                f"Model packaging code path {src} is not under {INCLUDE}: put the example's code in include/ "
                "(the images copy that folder)."
            ) from None
        target = dest / rel
        if Path(src).is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
        tops.add(dest / rel.parts[0])
    return sorted(tops)


def input_example(feature_columns: list[str], rows: int = 3) -> pd.DataFrame:
    """A few valid rows in the curated schema, restricted to the predictor's feature columns."""
    import pandas as pd

    from tollgate.data import schema

    special = {
        "device": lambda i: schema.DEVICES[i % len(schema.DEVICES)],
        "country": lambda i: schema.COUNTRIES[i % len(schema.COUNTRIES)],
        "hour_of_day": lambda i: (9 + 5 * i) % 24,
        "ad_position": lambda i: 1 + i % 5,
        "bid_price": lambda i: round(0.5 + 1.25 * i, 2),
        "user_ctr_7d": lambda i: round(0.02 + 0.03 * i, 3),
        "page_depth": lambda i: 1 + 2 * i,
        "user_id": lambda i: 1001 + i,
        "campaign_id": lambda i: 11 + i,
        "site_id": lambda i: 101 + i,
        "event_id": lambda i: f"example-{i}",
        "event_ts": lambda i: pd.Timestamp("2024-01-01T09:00:00Z") + pd.Timedelta(minutes=i),
    }
    unknown = [c for c in feature_columns if c not in special]
    if unknown:
        raise ValueError(
            f"Cannot build an input example for feature columns {unknown}: not in the curated schema"
        )
    frame = pd.DataFrame({c: [special[c](i) for i in range(rows)] for c in feature_columns})
    return frame.astype({c: schema.COLUMNS[c] for c in feature_columns})


def log_pyfunc(trained_dir: Path, *, run_id: str, tags: dict[str, str], client: MlflowClient) -> LoggedModel:
    """Log ``trained_dir`` (the trainer's output) as a pyfunc into MLflow run ``run_id``."""
    import mlflow
    from mlflow.models import infer_signature

    from tollgate import extensions

    packaging = extensions.active().packaging  # env TOLLGATE_EXAMPLE: whose pyfunc and code
    predictor = packaging.load_predictor(str(trained_dir))
    example = packaging.input_example(predictor)
    with warnings.catch_warnings():  # "integer columns cannot hold missing values": true and intended
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(example, predictor.predict_proba(example))
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        with tempfile.TemporaryDirectory(prefix="tollgate-code-") as tmp:
            code = stage_code(Path(tmp) / "code", packaging.code_paths)
            # MLflow names the artifact folder after the source folder: stage it as "trained/".
            staged = shutil.copytree(trained_dir, Path(tmp) / names.TRAINED_FILES_DIR)
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name=MODEL_NAME_IN_RUN,
                    python_model=str(packaging.model_code),
                    artifacts={names.TRAINED_FILES_DIR: str(staged)},
                    code_paths=[str(top) for top in code],
                    signature=signature,
                    input_example=example,
                    pip_requirements=pip_requirements(packaging.pip_requirements),
                    tags=tags,
                )
    finally:
        mlflow.set_tracking_uri(previous_uri)
    return client.get_logged_model(info.model_id)


def download(model: LoggedModel, dest: Path, tracking_uri: str) -> Path:
    """The logged model's files exactly as stored (its artifact location, not a ``models:/`` URI, which
    would add a ``registered_model_meta`` file of its own)."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in task logs
    dest.mkdir(parents=True, exist_ok=True)
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=model.artifact_location, dst_path=str(dest), tracking_uri=tracking_uri
        )
    )


def sign_logged_model(
    model: LoggedModel,
    *,
    client: MlflowClient,
    key: SigningKey,
    statement_inputs: dict[str, Any],
) -> tuple[SignatureInfo, str]:
    """Write provenance, sign, upload both files; return (signature, provenance sha256)."""
    with tempfile.TemporaryDirectory(prefix="tollgate-sign-") as tmp:
        files = download(model, Path(tmp) / "model", client.tracking_uri)
        statement = provenance.build_statement(
            files, logged_model_id=model.model_id, experiment_id=model.experiment_id, **statement_inputs
        )
        provenance_sha256 = provenance.write_statement(files, statement)
        signature = sign_model_dir(files, key)
        upload = Path(tmp) / "upload"
        upload.mkdir()
        for name in (names.PROVENANCE_FILE, names.SIGNATURE_FILE):
            shutil.copy2(files / name, upload / name)
        client.log_model_artifacts(model.model_id, str(upload))
    log.info(
        "Signed logged model %s: signature sha256 %s by key %s, provenance sha256 %s",
        model.model_id,
        signature.sha256,
        signature.key_id,
        provenance_sha256,
    )
    return signature, provenance_sha256
