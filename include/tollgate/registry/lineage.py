"""Lineage of a model version: from the version back to its dataset, validation report, training run
and checkpoints. The facts come from the *signed* provenance. A version that fails verification gets
only its problems: its provenance is not trusted, so no repository it names is read, no revision it names
reaches git and no checkpoint location it names is opened with the caller's credentials."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollgate.registry.provenance import checkpoint_manifest

if TYPE_CHECKING:
    from mlflow import MlflowClient


DATASET_MANIFEST = "data/manifest.json"  # written by tollgate.data.versioning with every dataset version


def dataset_manifest(repo: str | None, rev: str | None) -> dict[str, Any] | None:
    """The data repository's manifest at ``rev`` (window, partitions, the validation gate's report)."""
    if not repo or not rev:
        return None
    try:
        if Path(repo).is_dir():  # a local checkout: plain git, no DVC start-up cost
            text = subprocess.run(
                ["git", "-C", repo, "show", "--end-of-options", f"{rev}:{DATASET_MANIFEST}"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
        else:
            import dvc.api

            text = dvc.api.read(DATASET_MANIFEST, repo=repo, rev=rev)
        return json.loads(text)
    except Exception:  # lineage is best effort: say "unknown" rather than fail the walk
        return None


def mlflow_links(ui_url: str, name: str, version: str, experiment_id: str | None, run_id: str | None) -> dict:
    base = ui_url.rstrip("/")
    links = {"model_version": f"{base}/#/models/{name}/versions/{version}"}
    if experiment_id and run_id:
        links["training_run"] = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return links


def model_lineage(
    name: str,
    version_or_alias: str | int,
    trusted_keys: Any = None,
    *,
    client: MlflowClient | None = None,
    tracking_uri: str | None = None,
    mlflow_ui_url: str | None = None,
) -> dict[str, Any]:
    """Walk from ``name`` at ``version_or_alias`` to dataset rev, validation report, run and checkpoints."""
    from tollgate.registry.client import mlflow_client
    from tollgate.registry.retry import retrying
    from tollgate.registry.verify import verify_model_version

    client = client or mlflow_client(tracking_uri)
    result = verify_model_version(name, version_or_alias, trusted_keys, client=client)
    if result.version is None:
        raise LookupError("; ".join(result.problems))
    if not result.ok:  # untrusted provenance: act on none of it
        return {
            "model": {"name": name, "version": result.version, "aliases": result.aliases},
            "signature": {"ok": False, "problems": result.problems},
        }
    predicate = (result.provenance or {}).get("predicate", {})
    dataset = dict(predicate.get("dataset") or {})
    training = dict(predicate.get("training") or {})
    run = (
        retrying(f"look up run {result.run_id}", lambda: client.get_run(result.run_id))
        if result.run_id
        else None
    )
    experiment_id = run.info.experiment_id if run else None
    checkpoints = checkpoint_manifest(training.get("checkpoint_uri"))
    manifest = dataset_manifest(dataset.get("repo"), dataset.get("rev"))
    gate = (manifest or {}).get("gate") or {}
    return {
        "model": {
            "name": name,
            "version": result.version,
            "aliases": result.aliases,
            "logged_model_id": result.logged_model_id,
            "uri": f"models:/{name}/{result.version}",
            "links": mlflow_links(
                mlflow_ui_url or client.tracking_uri, name, result.version, experiment_id, result.run_id
            ),
        },
        "signature": {
            "ok": result.ok,
            "problems": result.problems,
            "signer_key_id": result.signer_key_id,
            "signature_sha256": result.signature_sha256,
            "provenance_sha256": result.provenance_sha256,
        },
        "dataset": {**dataset, "manifest": manifest},
        "validation_report": {
            "uri": gate.get("report_uri") or dataset.get("validation_report"),
            "status": gate.get("status"),
            "partition": (manifest or {}).get("partition"),
        },
        "training_run": {
            "training_run_id": training.get("training_run_id"),
            "mlflow_run_id": result.run_id,
            "run_name": run.info.run_name if run else None,
            "status": run.info.status if run else None,
            "params": predicate.get("params", {}),
            "metrics": predicate.get("metrics", {}),
            "attempts": training.get("attempts"),
            "preemptions": training.get("preemptions"),
            "airflow": predicate.get("airflow", {}),
            "training_image": predicate.get("training_image"),
            "code": predicate.get("code", {}),
        },
        "checkpoints": {
            "uri": training.get("checkpoint_uri"),
            "final": training.get("final_checkpoint"),
            "final_sha256": training.get("final_checkpoint_sha256"),
            "listed": checkpoints,
        },
    }
