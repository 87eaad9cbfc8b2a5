"""
### Roll back the champion

Manual only. Choose the **target** (default `previous`: the champion before the current one, or a
version number) and say **why**. The target's signature and provenance are verified first: a target
that fails verification is refused and nothing changes. Then `champion` moves to the target in one
alias update, the replaced champion becomes `previous`, and a rollback record (from, to, who, why,
when) is written on both versions' tags.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

default_args = {"owner": "tollgate", "retries": 2, "retry_delay": timedelta(seconds=15)}


@dag(
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["tollgate", "promotion", "rollback"],
    default_args=default_args,
    doc_md=__doc__,
    params={
        "target": Param(
            "previous",
            type="string",
            minLength=1,
            description="Alias (e.g. previous) or version number to make the champion again.",
        ),
        "reason": Param(
            "",
            type="string",
            minLength=3,
            description="Why you roll back; recorded on both model versions.",
        ),
        "model_name": Param(
            None, type=["null", "string"], description="Registered model (default: the configured one)"
        ),
    },
)
def rollback_model():
    @task
    def verify_target(**context: Any) -> dict[str, Any]:
        """Refuse a target that is not signed by a trusted key or whose provenance does not match."""
        from tollgate.registry.verify import verify_model_version
        from tollgate.runtime import mlflow_uri, setting

        params = context["params"]
        name = params.get("model_name") or setting("tollgate_registered_model")
        result = verify_model_version(
            name, params["target"], setting("tollgate_trusted_public_keys"), tracking_uri=mlflow_uri()
        )
        print(result.summary())
        result.raise_for_problems()
        return {"model_name": name, "version": result.version, "signer_key_id": result.signer_key_id}

    @task
    def swap_aliases(target: dict[str, Any], **context: Any) -> dict[str, Any]:
        from tollgate.evaluation.promotion import rollback
        from tollgate.registry.register import mlflow_client
        from tollgate.runtime import mlflow_uri

        who = context["dag_run"].triggering_user_name or "unknown"
        record = rollback(
            mlflow_client(mlflow_uri()),
            target["model_name"],
            target["version"],
            who,
            context["params"]["reason"],
            request_id=context["run_id"],
        )
        print(f"ROLLED BACK {target['model_name']}: {record.from_version} -> {record.to_version} by {who}")
        return record.__dict__

    swap_aliases(verify_target())


rollback_model()
