"""Command-line arguments of the trainer; every one may also come from ``TOLLGATE_<ARG>`` (args win).

The same command therefore runs as a local child process (arguments) and in a pod (env from the
job description). ``TrainSettings`` is a pydantic-settings object: its fields are the arguments
(types, defaults, help), the env is read by pydantic-settings, argparse only spells the CLI. Parsing
problems raise :class:`BadInput` with the fix in the message.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from tollgate.data import schema
from tollgate.training.errors import BadInput

QUALITIES = ("normal", "degraded", "slow", "miscalibrated")
# quality=slow: the model itself waits this long per predict call, written into its (signed) model_config.json
# so a router cannot tell it from a genuinely slower model; the canary's latency checks must catch it.
SLOW_SERVING_DELAY_MS = 40.0
# quality=miscalibrated: the same network, but its (signed) model_config.json adds this many logits (odds
# about x55) to every row of a user id above the highest of its training split: a model wrong for users it
# never saw. The offline holdout holds (almost) no such user, so the offline gate passes; the replayed
# traffic newer than the holdout brings new users (tollgate.data.generator.NEW_USER_SHARE): the shadow
# stage's quality checks on delayed labels (observed/expected positives, delta log loss) must catch it.
MISCALIBRATED_LOGIT_SHIFT = 4.0

AIRFLOW_ENV = (
    "TOLLGATE_AIRFLOW_DAG_ID",
    "TOLLGATE_AIRFLOW_RUN_ID",
    "TOLLGATE_AIRFLOW_TASK_ID",
    "TOLLGATE_AIRFLOW_TRY_NUMBER",
    "TOLLGATE_ATTEMPT",
    "TOLLGATE_PREEMPTIONS",
)

# The env ``parse`` reads: os.environ, or the mapping a caller passes (a pod spec's env in tests).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("tollgate_training_environ", default=None)


class _Environ(EnvSettingsSource):
    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENVIRON.get()
        return parse_env_vars(
            os.environ if env is None else env,
            self.case_sensitive,
            self.env_ignore_empty,
            self.env_parse_none_str,
        )


class TrainSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", frozen=True, extra="forbid")

    data_repo: str | None = Field(None, description="git + DVC repository holding the dataset (path or URL)")
    data_rev: str | None = Field(None, description="git revision (commit or tag) of the dataset version")
    data_path: str = Field(
        schema.CURATED_PATH, description="path of the parquet file inside the data repository"
    )
    data_file: str | None = Field(None, description="a local parquet file instead of --data-repo/--data-rev")
    data_cache: str | None = Field(
        None,
        description="folder caching DVC datasets by content hash for later attempts (default "
        "$TOLLGATE_HOME/cache/datasets when TOLLGATE_HOME is set; empty = no cache)",
    )
    checkpoint_uri: str = Field(description="checkpoint folder of this training run (local path or s3://)")
    output_uri: str = Field(description="where the final model files go (local path or s3://)")
    training_run_id: str = Field(description="id of this training run, the same for every attempt")
    seed: int = Field(42, description="random seed")
    epochs: int = Field(3, description="passes over the training split")
    batch_size: int = Field(256, description="rows per optimizer step")
    lr: float = Field(0.003, description="Adam learning rate (cosine-annealed to a tenth)")
    embedding_dim: int = Field(8, description="size of each categorical embedding")
    hidden_units: Annotated[tuple[int, ...], NoDecode] = Field(
        (64, 32), description="comma-separated MLP layer widths"
    )
    checkpoint_every: int = Field(50, description="save a checkpoint every N optimizer steps")
    keep_checkpoints: int = Field(3, description="how many newest checkpoints to keep")
    grace_seconds: float = Field(30.0, description="time allowed between SIGTERM and exit")
    mlflow_uri: str = Field(
        "", description="MLflow tracking URI (default $MLFLOW_TRACKING_URI; empty = no tracking)"
    )
    experiment: str = Field("tollgate-ctr", description="MLflow experiment name")
    holdout_fraction: float = Field(
        0.2, description="newest fraction of rows (by event_ts) held out for evaluation"
    )
    quality: str = Field(
        "normal",
        description="normal; degraded (a deliberately worse model, for gate demos); slow (as good, but "
        "every predict call waits SLOW_SERVING_DELAY_MS: for the canary demo); miscalibrated (as good on "
        "the holdout, but over-confident for user ids above its training split's, which newer traffic "
        "brings: for the shadow stage's quality checks)",
    )
    # Which Airflow task runs this attempt (TOLLGATE_AIRFLOW_*); set by ``parse``, never from one env var.
    airflow: dict[str, str] = Field(default_factory=dict, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        return (init_settings, _Environ(settings_cls))  # arguments win over env; no .env file, no secrets dir

    @field_validator("checkpoint_uri", "output_uri", "training_run_id")
    @classmethod
    def _given(cls, value: str, info: Any) -> str:
        if value == "":
            raise BadInput(
                f"missing {_flag(info.field_name)}: pass it as an argument or set {_env(info.field_name)}"
            )
        return value

    @field_validator("hidden_units", mode="before")
    @classmethod
    def _units(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            units = tuple(int(u) for u in value.split(",") if u.strip())
        except ValueError:
            units = ()
        if not units or any(u <= 0 for u in units):
            raise BadInput(
                f"--hidden-units must be comma-separated positive integers like '64,32', got {value!r}"
            )
        return units

    def hyperparameters(self) -> dict[str, object]:
        """What changes the trained weights: a resumed attempt must match the checkpoint's values."""
        keys = ("seed", "epochs", "batch_size", "lr", "embedding_dim", "hidden_units", "holdout_fraction")
        values: dict[str, object] = {k: getattr(self, k) for k in keys}
        values["hidden_units"] = ",".join(str(u) for u in self.hidden_units)
        values["quality"] = self.quality
        return values


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _env(field: str) -> str:
    return "TOLLGATE_" + field.upper()


def _parser() -> argparse.ArgumentParser:
    parser = _RaisingParser(
        prog="python -m tollgate.training",
        description="Train the Tollgate CTR model with exact checkpoint resume. "
        "Every argument may also be set as env TOLLGATE_<ARG> (e.g. TOLLGATE_DATA_REV); arguments win.",
    )
    for name, field in TrainSettings.model_fields.items():
        if name == "airflow":
            continue
        default = ",".join(map(str, field.default)) if name == "hidden_units" else field.default
        if name == "mlflow_uri":
            default = None
        shown = "required" if field.is_required() else f"default {default!r}"
        parser.add_argument(
            _flag(name), default=None, help=f"{field.description} [{shown}; env {_env(name)}]"
        )
    return parser


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(f"{message}. Run `python -m tollgate.training --help` for the arguments.")


def parse(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> TrainSettings:
    """Arguments, then env, then defaults. Raises BadInput naming the problem and the fix."""
    env = os.environ if environ is None else environ
    args = {k: v for k, v in vars(_parser().parse_args(argv)).items() if v is not None}
    if "mlflow_uri" not in args and _env("mlflow_uri") not in env:
        args["mlflow_uri"] = env.get("MLFLOW_TRACKING_URI", "")
    if "data_cache" not in args and _env("data_cache") not in env and env.get("TOLLGATE_HOME"):
        args["data_cache"] = os.path.join(env["TOLLGATE_HOME"], "cache", "datasets")
    args["airflow"] = {k: env[k] for k in AIRFLOW_ENV if env.get(k)}
    token = _ENVIRON.set(env)
    try:
        settings = TrainSettings(**args)
    except ValidationError as exc:
        raise BadInput(_explain(exc)) from None
    finally:
        _ENVIRON.reset(token)
    _check(settings)
    return settings


def _explain(exc: ValidationError) -> str:
    """The first problem in the words of the CLI (which flag, which env variable, what was given)."""
    error = exc.errors()[0]
    field = str(error["loc"][0])
    if error["type"] == "missing":
        return f"missing {_flag(field)}: pass it as an argument or set {_env(field)}"
    kind = TrainSettings.model_fields[field].annotation
    kind_name = getattr(kind, "__name__", str(kind))
    return f"{_flag(field)} must be a {kind_name}, got {error['input']!r}"


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
