"""Command-line arguments of the trainer; every one may also come from ``TOLLGATE_<ARG>`` (args win).

The same command therefore runs as a local child process (arguments) and in a pod (env from the
job description). Parsing problems raise :class:`BadInput` with the fix in the message.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field

from tollgate.data import schema
from tollgate.training.errors import BadInput

QUALITIES = ("normal", "degraded")


@dataclass(frozen=True)
class TrainSettings:
    checkpoint_uri: str
    output_uri: str
    training_run_id: str
    data_repo: str | None = None
    data_rev: str | None = None
    data_path: str = schema.CURATED_PATH
    data_file: str | None = None
    seed: int = 42
    epochs: int = 3
    batch_size: int = 256
    lr: float = 0.003
    embedding_dim: int = 8
    hidden_units: tuple[int, ...] = (64, 32)
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    grace_seconds: float = 30.0
    mlflow_uri: str = ""
    experiment: str = "tollgate-ctr"
    holdout_fraction: float = 0.2
    quality: str = "normal"
    airflow: dict[str, str] = field(default_factory=dict)

    def hyperparameters(self) -> dict[str, object]:
        """What changes the trained weights: a resumed attempt must match the checkpoint's values."""
        keys = ("seed", "epochs", "batch_size", "lr", "embedding_dim", "hidden_units", "holdout_fraction")
        values = {k: v for k, v in asdict(self).items() if k in keys}
        values["hidden_units"] = ",".join(str(u) for u in self.hidden_units)
        values["quality"] = self.quality
        return values


# (name, type, default, help). None as default = optional; REQUIRED = must be given.
REQUIRED = object()
_ARGS: list[tuple[str, type, object, str]] = [
    ("data-repo", str, None, "git + DVC repository holding the dataset (path or URL)"),
    ("data-rev", str, None, "git revision (commit or tag) of the dataset version"),
    ("data-path", str, schema.CURATED_PATH, "path of the parquet file inside the data repository"),
    ("data-file", str, None, "a local parquet file instead of --data-repo/--data-rev"),
    ("checkpoint-uri", str, REQUIRED, "checkpoint folder of this training run (local path or s3://)"),
    ("output-uri", str, REQUIRED, "where the final model files go (local path or s3://)"),
    ("training-run-id", str, REQUIRED, "id of this training run, the same for every attempt"),
    ("seed", int, 42, "random seed"),
    ("epochs", int, 3, "passes over the training split"),
    ("batch-size", int, 256, "rows per optimizer step"),
    ("lr", float, 0.003, "Adam learning rate (cosine-annealed to a tenth)"),
    ("embedding-dim", int, 8, "size of each categorical embedding"),
    ("hidden-units", str, "64,32", "comma-separated MLP layer widths"),
    ("checkpoint-every", int, 50, "save a checkpoint every N optimizer steps"),
    ("keep-checkpoints", int, 3, "how many newest checkpoints to keep"),
    ("grace-seconds", float, 30.0, "time allowed between SIGTERM and exit"),
    ("mlflow-uri", str, None, "MLflow tracking URI (default $MLFLOW_TRACKING_URI; empty = no tracking)"),
    ("experiment", str, "tollgate-ctr", "MLflow experiment name"),
    ("holdout-fraction", float, 0.2, "newest fraction of rows (by event_ts) held out for evaluation"),
    ("quality", str, "normal", "normal, or degraded (a deliberately worse model, for gate demos)"),
]

AIRFLOW_ENV = (
    "TOLLGATE_AIRFLOW_DAG_ID",
    "TOLLGATE_AIRFLOW_RUN_ID",
    "TOLLGATE_AIRFLOW_TASK_ID",
    "TOLLGATE_AIRFLOW_TRY_NUMBER",
    "TOLLGATE_ATTEMPT",
    "TOLLGATE_PREEMPTIONS",
)


def env_name(arg: str) -> str:
    return "TOLLGATE_" + arg.upper().replace("-", "_")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tollgate.training",
        description="Train the Tollgate CTR model with exact checkpoint resume. "
        "Every argument may also be set as env TOLLGATE_<ARG> (e.g. TOLLGATE_DATA_REV); arguments win.",
    )
    for name, _kind, default, text in _ARGS:
        shown = "required" if default is REQUIRED else f"default {default!r}"
        parser.add_argument(f"--{name}", default=None, help=f"{text} [{shown}; env {env_name(name)}]")
    return parser


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(f"{message}. Run `python -m tollgate.training --help` for the arguments.")


def parse(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> TrainSettings:
    """Arguments, then env, then defaults. Raises BadInput naming the problem and the fix."""
    env = os.environ if environ is None else environ
    parser = _parser()
    parser.__class__ = _RaisingParser
    ns = vars(parser.parse_args(argv))
    values: dict[str, object] = {}
    for name, kind, default, _text in _ARGS:
        key = name.replace("-", "_")
        raw = ns.get(key)
        if raw is None:
            raw = env.get(env_name(name))
        if raw is None or (raw == "" and default is REQUIRED):
            if default is REQUIRED:
                raise BadInput(f"missing --{name}: pass it as an argument or set {env_name(name)}")
            values[key] = default
            continue
        try:
            values[key] = kind(raw)
        except ValueError:
            raise BadInput(f"--{name} must be a {kind.__name__}, got {raw!r}") from None
    if values["mlflow_uri"] is None:
        values["mlflow_uri"] = env.get("MLFLOW_TRACKING_URI", "")
    values["hidden_units"] = _hidden_units(str(values["hidden_units"]))
    values["airflow"] = {k: env[k] for k in AIRFLOW_ENV if env.get(k)}
    settings = TrainSettings(**values)  # type: ignore[arg-type]
    _check(settings)
    return settings


def _hidden_units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(u) for u in text.split(",") if u.strip())
    except ValueError:
        units = ()
    if not units or any(u <= 0 for u in units):
        raise BadInput(f"--hidden-units must be comma-separated positive integers like '64,32', got {text!r}")
    return units


def _check(s: TrainSettings) -> None:
    if s.data_file is None and not (s.data_repo and s.data_rev):
        raise BadInput(
            "no dataset given: pass --data-repo and --data-rev (a DVC-versioned dataset), "
            "or --data-file for a local parquet file"
        )
    if s.data_file is not None and (s.data_repo or s.data_rev):
        raise BadInput("give either --data-file or --data-repo/--data-rev, not both")
    positive = {
        "epochs": s.epochs,
        "batch-size": s.batch_size,
        "embedding-dim": s.embedding_dim,
        "checkpoint-every": s.checkpoint_every,
        "keep-checkpoints": s.keep_checkpoints,
    }
    for name, value in positive.items():
        if value <= 0:
            raise BadInput(f"--{name} must be a positive integer, got {value}")
    if s.lr <= 0:
        raise BadInput(f"--lr must be positive, got {s.lr}")
    if s.grace_seconds <= 0:
        raise BadInput(f"--grace-seconds must be positive, got {s.grace_seconds}")
    if not 0.0 < s.holdout_fraction < 1.0:
        raise BadInput(f"--holdout-fraction must be between 0 and 1 (exclusive), got {s.holdout_fraction}")
    if s.quality not in QUALITIES:
        raise BadInput(f"--quality must be one of {', '.join(QUALITIES)}, got {s.quality!r}")
    if not s.training_run_id.strip():
        raise BadInput("--training-run-id must not be blank")
