"""Every default of Tollgate in one module.

Deployment choices are Airflow Variables (see ``airflow_settings.yaml``); this module holds the
names of those Variables and the embedded defaults they fall back to, so a reader finds every
default here. Library functions take explicit arguments; DAG tasks resolve them with ``setting()``.
Nothing here imports Airflow: the training container imports this module too.
"""

from __future__ import annotations

import json
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
    # Data gate: days in the curated rolling window; share of bad rows above which the whole partition
    # is rejected; row-count and label-rate (click share) bounds of a partition.
    "tollgate_window_days": "7",
    "tollgate_quarantine_max_share": "0.05",
    "tollgate_partition_rows": "1000,5000000",
    "tollgate_label_rate": "0.005,0.12",
    # Rows the gate and the curated window hold at once (memory does not grow with the partition); 0: the
    # whole partition at once (for a suite with an expectation that cannot be combined across chunks).
    "tollgate_gate_chunk_rows": "500000",
    # Land a missing partition with the built-in generator (simulated upstream): "auto" = only when the
    # landing area is a local folder; "true"/"false" force it. Rows per simulated day.
    "tollgate_simulate_upstream": "auto",
    "tollgate_simulated_rows": "20000",
    # How training is launched: "local" (child process) or "kubernetes" (spot pod).
    "tollgate_launch_backend": "local",
    "tollgate_training_image": "ghcr.io/tollgate-mlops/tollgate-training:0.1.0",
    # Spot training: retry budgets, checkpoint grace (the spot notice; GCP 30 s, AWS 120 s), capacity, pod.
    "tollgate_preemption_budget": "5",
    "tollgate_failure_budget": "1",
    "tollgate_checkpoint_grace_seconds": "30",
    "tollgate_on_demand_last_attempt": "true",
    "tollgate_training_instance_type": "m5.xlarge",
    "tollgate_training_resources": '{"cpu": "2", "memory": "4Gi", "gpu": 0}',
    "tollgate_k8s_namespace": "tollgate",
    "tollgate_training_service_account": "tollgate-training",
    # Registered model (unset: the example's own, e.g. tollgate-ctr, tollgate-digits; see runtime.setting).
    "tollgate_registered_model": "tollgate-ctr",
    # Promotion: who may approve (user names, comma-separated) and the offline gate thresholds
    # (JSON overriding tollgate.evaluation.offline_gate.GateThresholds; empty = the defaults there).
    "tollgate_approvers": "approver",
    # Where approvers are told that an approval waits, and its outcome: JSON, Airflow user -> e-mail.
    "tollgate_approver_emails": '{"approver": "approver@localhost"}',
    "tollgate_offline_gate": "",
    # Shadow and canary stages (JSON overriding tollgate.evaluation.rollout_plan.RolloutPlan; "analysis"
    # overrides CanarySettings). This default is the local platform's: replayed traffic, small samples and
    # short deadlines so a stage takes seconds. Production: {"replay": false, "required": true}.
    "tollgate_rollout": json.dumps(
        {
            "replay": True,
            "stage_deadline_s": 120,
            "poll_s": 1,
            "label_delay_s": 1,
            "analysis": {
                "min_challenger_samples": 30,
                "min_champion_samples": 30,
                "min_labelled_pairs": 200,
                "bootstrap_resamples": 200,
            },
        }
    ),
    # The watch after promotion (JSON overriding tollgate.evaluation.champion_watch.WatchPlan). This default
    # is the local platform's: a 20 s watch with replayed traffic. Production: {"watch_s": 21600,
    # "min_samples": 2000} (real traffic over 6 h against the previous champion's last 24 h).
    "tollgate_watch": json.dumps(
        {
            "watch_s": 20,
            "baseline_s": 3600,
            "min_samples": 30,
            "replay": True,
            "replay_requests": 200,
            "analysis": {"bootstrap_resamples": 200},
        }
    ),
    "tollgate_holdout_fraction": "0.2",
    "tollgate_mlflow_ui_url": "http://127.0.0.1:5000",
    # Public keys whose model signatures are trusted: PEM files, folders of *.pub, or inline PEM blocks,
    # separated by commas or new lines. The signing key itself is Connection SIGNING_CONN_ID.
    "tollgate_trusted_public_keys": "{state}/keys/tollgate-dev-signing.pub",
    # Public keys whose decision attestations (approve, reject, rollback) are trusted. The private decision
    # key is Connection DECISION_CONN_ID, read only by the promote and rollback tasks.
    "tollgate_decision_public_keys": "{state}/keys/tollgate-dev-decision.pub",
}

MLFLOW_CONN_ID = "mlflow_default"
AWS_CONN_ID = "aws_default"
SIGNING_CONN_ID = "tollgate_signing"
DECISION_CONN_ID = "tollgate_decision"
AIRFLOW_API_CONN_ID = "tollgate_airflow_api"
ALIAS_POOL = "tollgate_alias_moves"  # one slot: promote and rollback never move aliases at the same time
SPOT_POOL = "spot_training"
# Hours an approval request waits for a human before it counts as a rejection (a run Param overrides it).
APPROVAL_TIMEOUT_MINUTES = 24 * 60
K8S_CONN_ID = "kubernetes_default"

# Airflow `retries` of the training task: the ceiling for preemption budget + failure budget (the budgets
# themselves are Variables/Params; Airflow cannot raise a task's retries at run time).
TRAINING_MAX_RETRIES = 10

# Hourly prices (USD) per instance type for the spot cost report. Illustrative us-east-1 / us-central1
# list prices; set your own (region, discounts) here. Variable tollgate_training_instance_type picks the row.
INSTANCE_PRICES_USD_PER_HOUR: dict[str, dict[str, float]] = {
    "m5.xlarge": {"spot": 0.0772, "on_demand": 0.192},
    "m5.2xlarge": {"spot": 0.1544, "on_demand": 0.384},
    "c5.2xlarge": {"spot": 0.1378, "on_demand": 0.34},
    "g4dn.xlarge": {"spot": 0.2205, "on_demand": 0.526},
    "g5.xlarge": {"spot": 0.4351, "on_demand": 1.006},
    "n2-standard-4": {"spot": 0.0475, "on_demand": 0.1942},
    "g2-standard-4": {"spot": 0.2841, "on_demand": 0.7068},
}


def default_for(name: str) -> str:
    """The embedded default of a Variable, with the state folder filled in."""
    # str.replace, not str.format: some defaults are JSON with braces of their own.
    return VARIABLE_DEFAULTS[name].replace("{state}", str(state_dir()))


def mlflow_tracking_uri() -> str:
    """MLflow tracking URI outside Airflow (CLI, tests, the training container)."""
    return os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
