"""
### Train the active example's model on spot capacity

The trainer is the active example's (env `TOLLGATE_EXAMPLE`, default `ctr`): any command that honours the
trainer contract (README "Use it for your own model"). Empty hyperparameter Params leave the trainer's
own defaults.

Runs whenever a new **curated dataset** version is published (Asset `curated_dataset`; the version
comes from the triggering event), or by hand with the Params below.

1. **prepare_job** - picks the dataset version and builds the training job from the deployment
   Variables (image, resources, storage root, retry budgets, grace period). The training run id is
   stable per DAG run, so every retry resumes the same checkpoints and MLflow run.
   The version: Param `rev` (a tag such as `data-2024-03-02`, or a git rev) trains exactly that, on
   purpose. Otherwise the **newest** of the events that triggered the run, by data date then version
   (the others are logged as skipped), and only if it is the newest curated version there is: an
   event of an older version (a backfill of old days) or one published by a backfill is recorded in
   the log and the run is skipped, so backfills never retrain on stale data. A run without events
   takes the newest of the recent curated versions.
2. **choose_launcher** - Variable `tollgate_launch_backend`: `local` (child process, the embedded default)
   or `kubernetes` (a spot pod through a deferrable KubernetesPodOperator).
3. **train_local / train_kubernetes** - one try = one training attempt, in pool `spot_training`. Each
   failed attempt is classified: a **spot preemption** (trainer exit 75, pod evicted/deleted, node lost)
   retries within the preemption budget and resumes from the last checkpoint; a **real failure** has a
   small budget (bad input none) and fails with the cause. Watch the tries in the task's
   "Task Tries" view; the attempt ledger sits next to the checkpoints.
4. **publish_trained_model** - writes the **spot report** (attempts, preemptions, lost steps, checkpoint
   time, cost vs on-demand) to the task log and the MLflow run, and publishes the `trained_model`
   Asset event with everything registration needs. It returns the same dict for tasks added after it.
5. **register_challenger** - logs the model to MLflow as a pyfunc, writes its provenance statement, signs
   the logged files (OpenSSF model-signing, key from Connection `tollgate_signing`), registers a version
   of Variable `tollgate_registered_model`, verifies it against Variable `tollgate_trusted_public_keys`,
   gives it the alias `challenger` and publishes the `challenger_model` Asset event
   ({model_name, version}). A rerun returns the version registered before: no duplicate, no second signature.

To see the preemption path end to end, trigger with `interruption = sigterm_at_step` and
`interruption_value = 20`: the first try is interrupted at step 20, the second resumes from the checkpoint.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from tollgate.assets import CHALLENGER_MODEL, CURATED_DATASET, TRAINED_MODEL
from tollgate.config import SPOT_POOL, TRAINING_MAX_RETRIES
from tollgate.launch.attempts import retry_policy
from tollgate.launch.operators import LocalTrainingOperator, SpotTrainingPodOperator

default_args = {"owner": "tollgate", "retries": 2, "retry_delay": timedelta(seconds=10)}

# How many recent curated-dataset events a run without a triggering event looks at for the newest one.
RECENT_EVENTS = 50

# Retries of a training task: the ceiling of preemption + failure budgets, which decide the real limit.
training_args: dict[str, Any] = {
    "pool": SPOT_POOL,
    "retries": TRAINING_MAX_RETRIES,
    "retry_delay": timedelta(seconds=5),
    "retry_policy": retry_policy(),
}


@dag(
    schedule=CURATED_DATASET,
    catchup=False,
    max_active_runs=1,
    tags=["tollgate", "training", "spot"],
    default_args=default_args,
    doc_md=__doc__,
    params={
        "rev": Param(
            "latest",
            type="string",
            description="Dataset version (git rev of the data repo); latest = newest curated dataset",
        ),
        "data_repo": Param(
            None,
            type=["null", "string"],
            description="Data repository (git + DVC) for rev; empty = Variable tollgate_data_repo",
        ),
        "example": Param(
            None,
            type=["null", "string"],
            description="Example whose trainer runs (ctr, digits, a module path); empty = the dataset "
            "event's example or the configured one (env TOLLGATE_EXAMPLE)",
        ),
        "epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=100,
            description="Training epochs; empty = the example trainer's default (click-through: 3)",
        ),
        "batch_size": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Rows per optimizer step; empty = the trainer's default (click-through: 256)",
        ),
        "lr": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            description="Learning rate; empty = the trainer's default (click-through: 0.003)",
        ),
        "seed": Param(42, type="integer", description="Seed: the same seed and data give the same weights"),
        "checkpoint_every": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Checkpoint every N steps (and always on SIGTERM); empty = the trainer's default",
        ),
        "quality": Param(
            "normal",
            enum=["normal", "degraded", "slow", "miscalibrated"],
            description="degraded = a deliberately worse model (exercises the offline gate); slow = as good, "
            "but its predict waits 40 ms per call, stored in its signed files (exercises the canary); "
            "miscalibrated = as good on the holdout, but over-confident for users newer than its training "
            "data, stored in its signed files: newer traffic brings them (exercises the shadow stage)",
        ),
        "interruption": Param(
            "none",
            enum=["none", "sigterm_at_step", "sigterm_after_seconds"],
            description="Inject a spot interruption (local launcher): SIGTERM at step N or after X seconds",
        ),
        "interruption_value": Param(
            20, type="number", minimum=0, description="N (steps) or X (seconds) for the interruption"
        ),
        "interruption_sigkill": Param(
            False, type="boolean", description="Send SIGKILL instead of SIGTERM: capacity lost without notice"
        ),
        "interruption_attempts": Param(
            1,
            type="integer",
            minimum=0,
            maximum=TRAINING_MAX_RETRIES,
            description="How many attempts (from the first) are interrupted",
        ),
        "preemption_budget": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Preemptions to absorb; empty = Variable tollgate_preemption_budget",
        ),
        "failure_budget": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Retries for real failures; empty = Variable tollgate_failure_budget",
        ),
    },
)
def train_model():
    @task(inlets=[CURATED_DATASET])
    def prepare_job(**context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from tollgate import extensions
        from tollgate.launch.pipeline import PLAN_SETTINGS, StaleDataset, build_plan, choose_dataset
        from tollgate.runtime import mlflow_uri, setting

        settings = {name: setting(name) for name in PLAN_SETTINGS}
        triggering = context["triggering_asset_events"].get(CURATED_DATASET) or []
        recent = context["inlet_events"][CURATED_DATASET].ascending(False).limit(RECENT_EVENTS)
        try:
            dataset = choose_dataset(
                rev_param=context["params"].get("rev"),
                triggering_extras=[event.extra or {} for event in triggering],
                recent_extras=[event.extra or {} for event in recent],
                data_repo=context["params"].get("data_repo") or settings["tollgate_data_repo"],
                log=print,
            )
        except StaleDataset as stale:
            print(f"SKIPPED: {stale}")
            raise AirflowSkipException(str(stale)) from stale
        # The example travels with the dataset version (its curated event); else the configured one.
        dataset["example"] = (
            context["params"].get("example") or dataset.get("example") or extensions.configured()
        )
        with extensions.using(dataset["example"]):
            plan = build_plan(
                dag_id=context["dag"].dag_id,
                run_id=context["run_id"],
                params=context["params"],
                settings=settings,
                dataset=dataset,
                mlflow_uri=mlflow_uri(),
            )
        print(
            f"Training run {plan.job.training_run_id} of example {dataset['example']}: "
            f"dataset rev {dataset['rev']} ({dataset['source']}), "
            f"backend {plan.backend}, checkpoints {plan.job.checkpoint_uri}"
        )
        return plan.to_dict()

    @task.branch
    def choose_launcher(plan: dict[str, Any]) -> str:
        return "train_kubernetes" if plan["backend"] == "kubernetes" else "train_local"

    @task(outlets=[TRAINED_MODEL], trigger_rule="none_failed_min_one_success")
    def publish_trained_model(plan: dict[str, Any], **context: Any) -> dict[str, Any]:
        from tollgate.config import INSTANCE_PRICES_USD_PER_HOUR
        from tollgate.launch.pipeline import finish_training
        from tollgate.launch.plan import LaunchPlan

        info = finish_training(LaunchPlan.from_dict(plan), prices=INSTANCE_PRICES_USD_PER_HOUR)
        context["outlet_events"][TRAINED_MODEL].extra = info
        return info

    @task(outlets=[CHALLENGER_MODEL])
    def register_challenger(trained: dict[str, Any], plan: dict[str, Any], **context: Any) -> dict[str, Any]:
        from tollgate import extensions
        from tollgate.registry.tasks import register_from_task

        example = (plan.get("dataset") or {}).get("example")
        with extensions.using(example):  # whose pyfunc, code and registered model
            registered = register_from_task(trained, plan, context)
        context["outlet_events"][CHALLENGER_MODEL].extra = {
            "model_name": registered["model_name"],
            "version": registered["version"],
            **({"example": example} if example else {}),
        }
        return registered

    plan = prepare_job()
    local = LocalTrainingOperator(task_id="train_local", plan=plan, **training_args)
    pod = SpotTrainingPodOperator(task_id="train_kubernetes", plan=plan, **training_args)
    trained = publish_trained_model(plan)
    choose_launcher(plan) >> [local, pod] >> trained
    register_challenger(trained, plan)


train_model()
