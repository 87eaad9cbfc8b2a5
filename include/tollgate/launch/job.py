"""The one description of a training job, from which both launchers (local process, spot pod) render.

Plain Python: no Airflow, no Kubernetes client. A job travels between tasks as a JSON-safe dict
(``to_dict`` / ``from_dict``), so the DAG can build it in one task and launch it in another.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

TRAINER_COMMAND = ("python", "-m", "tollgate.training")
# Default seconds added to the checkpoint grace for the pod's terminationGracePeriodSeconds, so the
# kubelet's SIGKILL never lands while the trainer is still finishing the checkpoint it was given `grace` for.
POD_GRACE_MARGIN_SECONDS = 10

_LABEL_MAX = 63
_ARG_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
# The Secret (in the training namespace) holding the trainer's MLflow basic-auth account, and the key of
# each variable in it: the pod reads them through secretKeyRef, so no password is written in a pod spec.
MLFLOW_CREDENTIALS_SECRET = "tollgate-mlflow-credentials"
MLFLOW_CREDENTIAL_KEYS = {"MLFLOW_TRACKING_USERNAME": "username", "MLFLOW_TRACKING_PASSWORD": "password"}


def sanitize_label_value(value: str) -> str:
    """A Kubernetes label value (<= 63 chars of ``[A-Za-z0-9._-]``, alphanumeric at both ends).

    Invalid characters become ``-``; a value that had to be cut keeps a short hash of the original so
    two long values stay distinct.
    """
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", value)
    clean = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", clean)
    if len(clean) <= _LABEL_MAX:
        return clean
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    head = re.sub(r"[^A-Za-z0-9]+$", "", clean[: _LABEL_MAX - 9])
    return f"{head}-{digest}"


def training_run_id(dag_id: str, run_id: str) -> str:
    """A stable id for the training run of one DAG run: every retry resumes the same checkpoints and MLflow
    run. Lower-case, path- and label-safe, <= 63 chars, unique per (dag_id, run_id) through a hash."""
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}".encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9]+", "-", f"{dag_id}-{run_id}".lower()).strip("-")
    return f"{readable[: _LABEL_MAX - 11].rstrip('-')}-{digest}"


@dataclass(frozen=True)
class Resources:
    """Container resources. ``gpu`` > 0 asks for ``nvidia.com/gpu`` (requests = limits)."""

    cpu: str = "2"
    memory: str = "4Gi"
    gpu: int = 0

    @classmethod
    def parse(cls, value: str | Mapping[str, Any]) -> Resources:
        """From the ``tollgate_training_resources`` Variable (JSON) or a dict, with a clear error."""
        try:
            raw = json.loads(value) if isinstance(value, str) else dict(value)
            unknown = set(raw) - {"cpu", "memory", "gpu"}
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}")
            resources = cls(
                cpu=str(raw.get("cpu", cls.cpu)),
                memory=str(raw.get("memory", cls.memory)),
                gpu=int(raw.get("gpu", cls.gpu)),
            )
            if resources.gpu < 0:
                raise ValueError("gpu must be >= 0")
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"Invalid training resources {value!r}: {exc}. Expected JSON like "
                '{"cpu": "2", "memory": "4Gi", "gpu": 0} (Variable tollgate_training_resources).'
            ) from None
        return resources


@dataclass(frozen=True)
class TrainingJob:
    """Everything needed to run one training run, whichever launcher runs it.

    ``trainer_args`` holds the remaining trainer arguments (dataset, hyperparameters) by their CLI name
    without dashes, e.g. ``{"data-rev": "abc", "epochs": 3}``; see the trainer contract.
    """

    training_run_id: str
    image: str
    checkpoint_uri: str
    output_uri: str
    mlflow_uri: str = ""
    trainer_args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = TRAINER_COMMAND
    resources: Resources = field(default_factory=Resources)
    grace_seconds: int = 30
    grace_margin_seconds: int = POD_GRACE_MARGIN_SECONDS
    service_account: str = "tollgate-training"
    namespace: str = "tollgate"
    # The Secret (keys ``username``, ``password``) the pod reads MLflow's basic-auth account from; "" = none.
    mlflow_credentials_secret: str = MLFLOW_CREDENTIALS_SECRET
    instance_type: str = "m5.xlarge"
    on_demand: bool = False

    def __post_init__(self) -> None:
        bad = [name for name in self.trainer_args if not _ARG_NAME.match(name)]
        if bad:
            raise ValueError(
                f"Trainer argument names {bad} are not CLI names: use lower-case kebab-case without "
                "leading dashes, e.g. 'data-rev'."
            )
        for name in ("training_run_id", "image", "checkpoint_uri", "output_uri"):
            if not getattr(self, name):
                raise ValueError(f"TrainingJob.{name} is empty; every training job needs one.")
        if self.grace_seconds < 1:
            raise ValueError(f"grace_seconds must be >= 1, got {self.grace_seconds}.")

    # ---- rendering -------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        """The trainer's arguments (after the command), identical for both launchers."""
        args: dict[str, Any] = {
            "training-run-id": self.training_run_id,
            "checkpoint-uri": self.checkpoint_uri,
            "output-uri": self.output_uri,
            "grace-seconds": self.grace_seconds,
        }
        if self.mlflow_uri:
            args["mlflow-uri"] = self.mlflow_uri
        args.update(self.trainer_args)
        out: list[str] = []
        for name, value in args.items():
            if value is None:
                continue
            out += [f"--{name}", _arg_text(value)]
        return out

    def command_line(self) -> list[str]:
        return [*self.command, *self.argv()]

    @property
    def pod_grace_seconds(self) -> int:
        """terminationGracePeriodSeconds (and the local launcher's wait before SIGKILL): grace + margin."""
        return self.grace_seconds + self.grace_margin_seconds

    @property
    def capacity(self) -> str:
        return "on-demand" if self.on_demand else "spot"

    def with_changes(self, **changes: Any) -> TrainingJob:
        return replace(self, **changes)

    # ---- transport -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["command"] = list(self.command)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingJob:
        values = dict(data)
        values["command"] = tuple(values.get("command") or TRAINER_COMMAND)
        values["resources"] = Resources.parse(values.get("resources") or {})
        return cls(**values)


def airflow_env(
    *, dag_id: str, run_id: str, task_id: str, try_number: int, attempt: int, preemptions: int
) -> dict[str, str]:
    """The environment tying a trainer process to its Airflow task try (logged as MLflow tags)."""
    return {
        "TOLLGATE_AIRFLOW_DAG_ID": dag_id,
        "TOLLGATE_AIRFLOW_RUN_ID": run_id,
        "TOLLGATE_AIRFLOW_TASK_ID": task_id,
        "TOLLGATE_AIRFLOW_TRY_NUMBER": str(try_number),
        "TOLLGATE_ATTEMPT": str(attempt),
        "TOLLGATE_PREEMPTIONS": str(preemptions),
    }


def _arg_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
