"""The provenance statement of a trained model (in-toto Statement v1), and its checks.

``provenance.json`` sits in the logged model folder, so the model signature covers it. Its subjects are
the model files with their SHA-256 digests; its predicate records where the model came from: dataset
(DVC rev + content hash), code commit, training image, params, metrics, MLflow run and logged model,
Airflow dag/run ids, attempts, preemptions and the checkpoint the final weights came from.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tollgate.config import REPO_ROOT
from tollgate.registry import names
from tollgate.registry.signing import sha256_file

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://tollgate.dev/provenance/model-training/v1"
BUILDER_ID = "tollgate/train_model"


def model_file_digests(model_dir: Path) -> dict[str, str]:
    """Relative path -> sha256 for every file of the model except the provenance and the signature."""
    model_dir = Path(model_dir)
    skip = {names.PROVENANCE_FILE, names.SIGNATURE_FILE}
    return {
        path.relative_to(model_dir).as_posix(): sha256_file(path)
        for path in sorted(model_dir.rglob("*"))
        if path.is_file() and path.relative_to(model_dir).as_posix() not in skip
    }


def code_version(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """The code the pipeline runs: ``TOLLGATE_GIT_COMMIT`` (set in images), else the git checkout."""
    if os.environ.get("TOLLGATE_GIT_COMMIT"):
        return {"git_commit": os.environ["TOLLGATE_GIT_COMMIT"], "dirty": False, "source": "env"}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {
            "git_commit": "unknown",
            "dirty": None,
            "source": "no git checkout and no TOLLGATE_GIT_COMMIT",
        }
    return {"git_commit": commit, "dirty": dirty, "source": str(repo)}


def checkpoint_manifest(checkpoint_uri: str | None) -> list[dict[str, Any]] | None:
    """The checkpoints listed in ``<checkpoint_uri>/manifest.json`` (local or s3://), None if unreadable."""
    if not checkpoint_uri:
        return None
    try:
        from tollgate.storage import Folder

        return list(json.loads(Folder(checkpoint_uri).read("manifest.json")).get("checkpoints", []))
    except Exception:  # lineage is best effort: a missing or unreachable manifest is reported as None
        return None


def build_statement(
    model_dir: Path,
    *,
    trained: dict[str, Any],
    registered_model: str,
    logged_model_id: str,
    experiment_id: str | None,
    params: dict[str, Any],
    code: dict[str, Any],
    training_image: str,
    airflow: dict[str, Any],
) -> dict[str, Any]:
    """The in-toto statement for the files now in ``model_dir``."""
    subjects = [
        {"name": name, "digest": {"sha256": digest}} for name, digest in model_file_digests(model_dir).items()
    ]
    training = {
        "training_run_id": trained["training_run_id"],
        "attempts": int(trained.get("attempts") or 1),
        "preemptions": int(trained.get("preemptions") or 0),
        "final_checkpoint": trained.get("final_checkpoint"),
    }
    for optional in ("checkpoint_uri", "resumed_from", "steps", "epochs"):
        if trained.get(optional) is not None:
            training[optional] = trained[optional]
    listed = {c.get("name"): c for c in checkpoint_manifest(trained.get("checkpoint_uri")) or []}
    if trained.get("final_checkpoint") in listed:  # pin the exact bytes the final weights came from
        entry = listed[trained["final_checkpoint"]]
        training["final_checkpoint_sha256"] = entry.get("sha256")
        training["final_checkpoint_step"] = entry.get("step")
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "builder": {"id": BUILDER_ID},
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "dataset": dict(trained["dataset"]),
            "code": code,
            "training_image": training_image,
            "params": {k: str(v) for k, v in sorted(params.items())},
            "metrics": dict(trained.get("metrics") or {}),
            "training": training,
            "mlflow": {
                "run_id": trained["mlflow_run_id"],
                "experiment_id": experiment_id,
                "logged_model_id": logged_model_id,
                "registered_model": registered_model,
            },
            "airflow": {k: airflow.get(k) for k in ("dag_id", "run_id", "task_id", "try_number")},
        },
    }


def write_statement(model_dir: Path, statement: dict[str, Any]) -> str:
    """Write ``provenance.json`` (canonical JSON) and return its sha256."""
    data = (json.dumps(statement, indent=2, sort_keys=True) + "\n").encode()
    (Path(model_dir) / names.PROVENANCE_FILE).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def check_statement(
    model_dir: Path,
    *,
    version_name: str,
    version_run_id: str | None,
    version_model_id: str | None,
    tags: dict[str, str],
    signer_key_id: str | None,
    signature_sha256: str | None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """Compare the signed provenance with the version it is registered as; return (statement, problems)."""
    path = Path(model_dir) / names.PROVENANCE_FILE
    if not path.is_file():
        return None, [f"no provenance: {names.PROVENANCE_FILE} is missing from the model files"]
    problems: list[str] = []
    try:
        statement = json.loads(path.read_text())
        predicate = statement["predicate"]
        if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
            problems.append(f"provenance is not a {PREDICATE_TYPE} in-toto statement")
    except (ValueError, KeyError, TypeError) as err:
        return None, [f"unreadable provenance: {names.PROVENANCE_FILE} ({err})"]

    def expect(what: str, recorded: Any, registered: Any) -> None:
        if registered is None or registered == "":
            problems.append(f"provenance does not match: the version has no {what} to compare with")
        elif str(recorded) != str(registered):
            problems.append(
                f"provenance does not match: {what} is {recorded!r} in the signed provenance "
                f"but {registered!r} on the model version"
            )

    get = predicate.get
    expect(f"tag {names.TAG_PROVENANCE_SHA256}", sha256_file(path), tags.get(names.TAG_PROVENANCE_SHA256))
    expect(f"tag {names.TAG_SIGNATURE_SHA256}", signature_sha256, tags.get(names.TAG_SIGNATURE_SHA256))
    expect(f"tag {names.TAG_SIGNER_KEY_ID}", signer_key_id, tags.get(names.TAG_SIGNER_KEY_ID))
    expect(
        f"tag {names.TAG_TRAINING_RUN_ID}",
        (get("training") or {}).get("training_run_id"),
        tags.get(names.TAG_TRAINING_RUN_ID),
    )
    expect(f"tag {names.TAG_DATASET_REV}", (get("dataset") or {}).get("rev"), tags.get(names.TAG_DATASET_REV))
    expect(
        f"tag {names.TAG_DATASET_CONTENT_HASH}",
        (get("dataset") or {}).get("content_hash"),
        tags.get(names.TAG_DATASET_CONTENT_HASH),
    )
    mlflow_meta = get("mlflow") or {}
    expect("MLflow run id", mlflow_meta.get("run_id"), version_run_id)
    expect("logged model id", mlflow_meta.get("logged_model_id"), version_model_id)
    expect("registered model name", mlflow_meta.get("registered_model"), version_name)

    recorded = {s["name"]: s["digest"]["sha256"] for s in statement.get("subject", [])}
    actual = model_file_digests(model_dir)
    for name in sorted(set(recorded) | set(actual)):
        if name not in actual:
            problems.append(f"provenance does not match: subject {name} is missing from the model files")
        elif name not in recorded:
            problems.append(f"provenance does not match: file {name} is not a subject of the provenance")
        elif recorded[name] != actual[name]:
            problems.append(
                f"provenance does not match: digest of {name} differs from its provenance subject"
            )
    return statement, problems
