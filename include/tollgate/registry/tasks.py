"""The registration step as called from an Airflow task: settings from Variables, the signing key from
the Connection, the MLflow server from ``mlflow_default``. Prints the evidence (never the key)."""

from __future__ import annotations

from typing import Any

from tollgate.config import SIGNING_CONN_ID


def training_image_of(plan: dict[str, Any] | None) -> str:
    """What ran the training: the pod image on Kubernetes, the worker's own Python locally."""
    import platform
    import sys

    if plan and plan.get("backend") == "kubernetes":
        return str(plan["job"]["image"])
    return f"local-process (no image): python {platform.python_version()} at {sys.executable}"


def register_from_task(
    trained: dict[str, Any], plan: dict[str, Any] | None, context: dict[str, Any]
) -> dict[str, Any]:
    """Sign and register ``trained`` (publish_trained_model's result) as the challenger; return its ids."""
    from tollgate.registry.keys import signing_key_from_airflow
    from tollgate.registry.register import register_signed_challenger
    from tollgate.registry.verify import verify_model_version
    from tollgate.runtime import mlflow_uri, setting

    uri = mlflow_uri()
    trusted = setting("tollgate_trusted_public_keys")
    backend = (plan or {}).get("backend", "local")
    registered = register_signed_challenger(
        trained,
        signing_key=signing_key_from_airflow(SIGNING_CONN_ID),
        trusted_keys=trusted,
        model_name=setting("tollgate_registered_model"),
        tracking_uri=uri,
        training_image=training_image_of(plan),
        airflow={
            "dag_id": context["dag"].dag_id,
            "run_id": context["run_id"],
            "task_id": "train_kubernetes" if backend == "kubernetes" else "train_local",
        },
        on_step=lambda step: print(f"registration: {step}", flush=True),
    )
    result = verify_model_version(registered["model_name"], registered["version"], trusted, tracking_uri=uri)
    print(result.describe())
    print(
        f"CHALLENGER {registered['model_name']} version {registered['version']}"
        f"{'' if registered['created'] else ' (registered before; returned as is)'}\n"
        f"  signature sha256  {registered['signature_digest']}\n"
        f"  signer key id     {registered['signer_key_id']}\n"
        f"  provenance sha256 {registered['provenance_digest']}\n"
        f"  dataset rev       {registered['dataset_rev']}\n"
        f"  MLflow            {uri} run {registered['mlflow_run_id']}, "
        f"logged model {registered['logged_model_id']}"
    )
    result.raise_for_problems()
    return registered
