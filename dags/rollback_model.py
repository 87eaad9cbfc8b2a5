"""
### Roll back the champion

Manual only. Choose the **target** (default `previous`: the champion before the current one, or a
version number) and say **why**. Only a version that verifies (trusted signature, provenance) and
holds valid signed approval and promotion attestations — one that once passed every gate and a human
approval — can be the target; anything else is refused with the reason and nothing changes. The
checks run again right before the move, in the one-slot pool shared with `promote`. Then a signed
rollback attestation and a rollback record (from, to, who, why, when) are written on the versions
*before* `champion` moves to the target in one alias update; the replaced champion becomes `previous`.
A retry after a crash part-way finishes the same rollback.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from tollgate.config import ALIAS_POOL

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
        """Refuse a target that does not verify or was never approved and promoted through the gates."""
        from tollgate.evaluation.decisions import (
            check_rollback_target,
            keys_from_airflow,
            refusals_fail_the_task,
        )
        from tollgate.registry.register import mlflow_client
        from tollgate.runtime import mlflow_uri, setting

        params = context["params"]
        name = params.get("model_name") or setting("tollgate_registered_model")
        keys = keys_from_airflow(with_private=False)
        with refusals_fail_the_task():
            result = check_rollback_target(mlflow_client(mlflow_uri()), name, params["target"], keys)
        print(result.summary(), "; approval and promotion attestations valid")
        return {"model_name": name, "version": result.version, "signer_key_id": result.signer_key_id}

    @task(pool=ALIAS_POOL)
    def swap_aliases(target: dict[str, Any], **context: Any) -> dict[str, Any]:
        """Checks the target again at the move, records the signed rollback, then moves the aliases."""
        from tollgate.evaluation.decisions import (
            airflow_context,
            keys_from_airflow,
            refusals_fail_the_task,
            rollback_attested,
        )
        from tollgate.registry.register import mlflow_client
        from tollgate.runtime import mlflow_uri

        who = context["dag_run"].triggering_user_name or "unknown"
        with refusals_fail_the_task():
            record = rollback_attested(
                mlflow_client(mlflow_uri()),
                target["model_name"],
                target["version"],
                who,
                context["params"]["reason"],
                context["run_id"],
                keys_from_airflow(with_private=True),
                airflow_context(context),
            )
        print(f"ROLLED BACK {target['model_name']}: {record.from_version} -> {record.to_version} by {who}")
        return record.__dict__

    swap_aliases(verify_target())


rollback_model()
