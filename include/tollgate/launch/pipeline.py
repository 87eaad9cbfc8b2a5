"""The work of the ``train_model`` DAG's tasks, as plain functions the DAG wires and tests call directly.

``resolve_dataset`` picks the dataset version, ``build_plan`` turns run Params and deployment Variables into
a LaunchPlan, ``finish_training`` reads the trainer's result, writes the spot report (task log, MLflow,
next to the checkpoints) and returns what the TRAINED_MODEL asset event carries.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tollgate import extensions
from tollgate.config import TRAINING_MAX_RETRIES
from tollgate.events import newest_dataset_event, newest_tag, stale_dataset_reason
from tollgate.launch import ledger as ledgers
from tollgate.launch.budget import Budgets
from tollgate.launch.job import Resources, TrainingJob, training_run_id
from tollgate.launch.local import Interruption
from tollgate.launch.plan import LaunchPlan
from tollgate.launch.report import build_report, format_report, log_to_mlflow

LATEST = "latest"
RESULT_NAME = "result.json"
REPORT_NAME = "spot_report.json"


# The Variables build_plan reads (names in tollgate.config.VARIABLE_DEFAULTS).
PLAN_SETTINGS = (
    "tollgate_storage_root",
    "tollgate_data_repo",
    "tollgate_launch_backend",
    "tollgate_training_image",
    "tollgate_preemption_budget",
    "tollgate_failure_budget",
    "tollgate_checkpoint_grace_seconds",
    "tollgate_on_demand_last_attempt",
    "tollgate_training_instance_type",
    "tollgate_training_resources",
    "tollgate_k8s_namespace",
    "tollgate_training_service_account",
)


class DatasetNotFound(ValueError):
    """No dataset version to train on; the message says how to get one."""


class StaleDataset(Exception):
    """The run's newest dataset event is stale (older than the newest version, or backfilled): skip it."""


def resolve_dataset(
    *,
    rev_param: str | None,
    triggering_extra: Mapping[str, Any] | None,
    latest_extra: Mapping[str, Any] | None,
    data_repo: str,
    data_path: str | None = None,
) -> dict[str, Any]:
    """The dataset version to train on, with its lineage.

    Precedence: an explicit ``rev`` Param, then the curated-dataset event that triggered the run, then the
    latest curated-dataset event Airflow knows, then the head commit of the data repository.
    ``data_path`` defaults to the active example's curated path.
    """
    data_path = data_path or extensions.active().dataset.schema.curated_path
    if rev_param and rev_param != LATEST:
        return {"rev": rev_param, "data_repo": data_repo, "data_path": data_path, "content_hash": None,
                "source": "param"}  # fmt: skip
    for source, extra in (("triggering_event", triggering_extra), ("latest_event", latest_extra)):
        if extra and extra.get("rev"):
            return {
                "rev": str(extra["rev"]),
                "data_repo": str(extra.get("data_repo") or data_repo),
                "data_path": str(extra.get("data_path") or data_path),
                "content_hash": extra.get("content_hash"),
                "source": source,
                # lineage the approver and the provenance statement show
                **{k: extra[k] for k in LINEAGE_KEYS if extra.get(k) is not None},
            }
    head = _git_head(data_repo)
    if head is None:
        raise DatasetNotFound(
            f"No dataset version to train on: no curated-dataset event exists and {data_repo!r} is not a git "
            "repository with commits. Run the dataset_ingest DAG first, or trigger train_model with the "
            "Param rev set to a dataset version (git rev of the data repository)."
        )
    return {"rev": head, "data_repo": data_repo, "data_path": data_path, "content_hash": None,
            "source": "data_repo_head"}  # fmt: skip


# Curated-dataset event keys carried into the trained-model info (and so into the signed provenance).
LINEAGE_KEYS = (
    "tag",
    "rows",
    "quarantined_rows",
    "window_start",
    "window_end",
    "partition",
    "report_uri",
    "example",  # which example (dataset, trainer, packaging, gate) this version belongs to
)


def choose_dataset(
    *,
    rev_param: str | None,
    triggering_extras: Sequence[Mapping[str, Any]],
    recent_extras: Sequence[Mapping[str, Any]],
    data_repo: str,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The dataset version a run trains on, whatever the run type.

    An explicit ``rev`` Param trains that version on purpose. Otherwise the newest of the triggering
    events (by data date, then version; the others are logged as skipped) — and only if it is not stale:
    a version older than the newest one in the data repository, or one a backfill published, raises
    :class:`StaleDataset` (the run records the skip). A run without events takes the newest of the
    recent curated events.
    """
    if rev_param and rev_param != LATEST:
        return resolve_dataset(
            rev_param=rev_param, triggering_extra=None, latest_extra=None, data_repo=data_repo
        )
    if triggering_extras:
        choice = newest_dataset_event(triggering_extras)
        for line in choice.log_lines():
            log(line)
        chosen = choice.chosen or {}
        reason = stale_dataset_reason(
            chosen, newest_tag(_repo_tags(str(chosen.get("data_repo") or data_repo)))
        )
        if reason:
            raise StaleDataset(
                f"{reason} To train on it on purpose, trigger train_model with Param "
                f"rev={chosen.get('tag') or chosen.get('rev')}."
            )
        return resolve_dataset(
            rev_param=None, triggering_extra=chosen, latest_extra=None, data_repo=data_repo
        )
    latest = newest_dataset_event([e for e in recent_extras if e.get("rev")]).chosen
    return resolve_dataset(rev_param=None, triggering_extra=None, latest_extra=latest, data_repo=data_repo)


def _repo_tags(repo: str) -> list[str]:
    """Dataset version tags of a local data repository ([] for a remote URL or a missing folder)."""
    if "://" in repo or not Path(repo).is_dir():
        return []
    result = subprocess.run(["git", "-C", repo, "tag", "--list", "data-*"], capture_output=True, text=True)
    return result.stdout.split() if result.returncode == 0 else []


def _git_head(repo: str) -> str | None:
    if "://" in repo or not Path(repo).is_dir():
        return None
    result = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def build_plan(
    *,
    dag_id: str,
    run_id: str,
    params: Mapping[str, Any],
    settings: Mapping[str, str],
    dataset: Mapping[str, Any],
    mlflow_uri: str,
) -> LaunchPlan:
    """The launch plan of one DAG run. ``settings`` are the Variables (``tollgate.config`` names)."""
    run = training_run_id(dag_id, run_id)
    root = settings["tollgate_storage_root"].rstrip("/")
    budgets = Budgets(
        preemptions=_int_setting(params.get("preemption_budget"), settings, "tollgate_preemption_budget"),
        failures=_int_setting(params.get("failure_budget"), settings, "tollgate_failure_budget"),
        on_demand_last_attempt=settings["tollgate_on_demand_last_attempt"].strip().lower()
        in ("1", "true", "yes"),
    )
    if budgets.preemptions + budgets.failures > TRAINING_MAX_RETRIES:
        raise ValueError(
            f"preemption budget {budgets.preemptions} + failure budget {budgets.failures} exceeds the "
            f"training task's {TRAINING_MAX_RETRIES} retries; lower a budget (or raise "
            "TRAINING_MAX_RETRIES in tollgate/config.py)."
        )
    example = extensions.active()  # env TOLLGATE_EXAMPLE: whose trainer command runs
    job = TrainingJob(
        command=tuple(example.trainer.command),
        env={extensions.EXAMPLE_ENV: example.name},
        training_run_id=run,
        image=settings["tollgate_training_image"],
        checkpoint_uri=f"{root}/checkpoints/{run}",
        output_uri=f"{root}/models/{run}",
        mlflow_uri=mlflow_uri,
        trainer_args={
            "data-repo": dataset["data_repo"],
            "data-rev": dataset["rev"],
            "data-path": dataset["data_path"],
            # An empty Param is not passed: the example's trainer applies its own default.
            "seed": int(params.get("seed", 42)),
            "epochs": _optional(params.get("epochs"), int),
            "batch-size": _optional(params.get("batch_size"), int),
            "lr": _optional(params.get("lr"), float),
            "checkpoint-every": _optional(params.get("checkpoint_every"), int),
            "quality": params.get("quality", "normal"),
        },
        resources=Resources.parse(settings["tollgate_training_resources"]),
        grace_seconds=int(settings["tollgate_checkpoint_grace_seconds"]),
        service_account=settings["tollgate_training_service_account"],
        namespace=settings["tollgate_k8s_namespace"],
        instance_type=settings["tollgate_training_instance_type"],
    )
    interruption = Interruption.from_params(
        params.get("interruption", "none"),
        params.get("interruption_value"),
        bool(params.get("interruption_sigkill")),
    )
    return LaunchPlan(
        job=job,
        backend=settings["tollgate_launch_backend"].strip().lower(),
        budgets=budgets,
        interruption=interruption,
        interrupt_attempts=int(params.get("interruption_attempts", 1)),
        dataset=dict(dataset),
    )


def _optional(value: Any, cast: Callable[[Any], Any]) -> Any:
    return None if value is None or value == "" else cast(value)


def _int_setting(param: Any, settings: Mapping[str, str], name: str) -> int:
    value = settings[name] if param is None else param
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None


def finish_training(
    plan: LaunchPlan, *, prices: Mapping[str, Mapping[str, float]], log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Read the trainer's result, write the spot report everywhere it belongs, return the asset extra."""
    from tollgate.storage import Folder

    job = plan.job
    output = Folder(job.output_uri)
    if not output.exists(RESULT_NAME):
        raise FileNotFoundError(
            f"{job.output_uri}/{RESULT_NAME} is missing although training reported success: the trainer "
            "did not finish writing its output. Clear the training task to run it again."
        )
    result = json.loads(output.read(RESULT_NAME))
    ledger = ledgers.load(job.checkpoint_uri, job.training_run_id)
    report = build_report(ledger, result, instance_type=job.instance_type, prices=prices)
    log(format_report(report))
    Folder(job.checkpoint_uri).write(REPORT_NAME, json.dumps(report, indent=2).encode())
    mlflow_run_id = result.get("mlflow_run_id")
    if mlflow_run_id and job.mlflow_uri:
        log_to_mlflow(report, job.mlflow_uri, mlflow_run_id)
        log(f"Spot report logged to MLflow run {mlflow_run_id} ({job.mlflow_uri})")
    dataset = {**plan.dataset, **(result.get("dataset") or {})}
    lineage = {k: dataset[k] for k in LINEAGE_KEYS if dataset.get(k) is not None}
    return {
        "training_run_id": job.training_run_id,
        "mlflow_run_id": mlflow_run_id,
        "model_uri": job.output_uri,
        "checkpoint_uri": job.checkpoint_uri,
        "rev": dataset.get("rev"),
        "content_hash": dataset.get("content_hash"),
        "data_repo": dataset.get("repo") or dataset.get("data_repo"),
        "data_path": dataset.get("path") or dataset.get("data_path"),
        "metrics": result.get("metrics") or {},
        "attempts": report["attempts"],
        "preemptions": report["preemptions"],
        "steps_redone": report["steps_redone"],
        "final_checkpoint": result.get("final_checkpoint"),
        "resumed_from": result.get("resumed_from"),
        "dataset": {
            "repo": dataset.get("repo") or dataset.get("data_repo"),
            "rev": dataset.get("rev"),
            "path": dataset.get("path") or dataset.get("data_path"),
            "content_hash": dataset.get("content_hash"),
            **lineage,
        },
        "cost_usd": report["cost_usd"],
        "on_demand_cost_usd": report["on_demand_cost_usd"],
    }
