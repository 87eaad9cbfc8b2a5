"""The four extension points: a user's own dataset, trainer, model packaging and gate metrics.

Tollgate's DAGs and library never name a particular model. What is specific to one use case lives in
an *example* (a profile): a Python module that exposes ``EXAMPLE = Example(...)`` built from the small
interfaces below. The shipped ones are ``tollgate_examples.ctr`` (click-through, the default) and
``tollgate_examples.digits`` (handwritten digits); a user points Tollgate at their own module.

Which example is active is configuration read **at run time** (inside tasks, the trainer, the demo),
never at DAG parse time: the env variable ``TOLLGATE_EXAMPLE`` holds a short name (``ctr``, ``digits``:
a module under ``tollgate_examples``) or a dotted module path (``mycompany.tollgate_profile``).
A run may name another one (ingest Param ``example`` or the landing event's ``example``); the name then
travels with the data: curated-dataset event, training job, signed provenance, challenger event. Tasks
apply it with :func:`using`, so one platform serves several examples side by side.

This module imports nothing heavy (no pandas, torch, MLflow or GX) and no example: examples import it.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from tollgate.data.suite import GateThresholds, Spec

EXAMPLE_ENV = "TOLLGATE_EXAMPLE"
DEFAULT_EXAMPLE = "ctr"
EXAMPLES_PACKAGE = "tollgate_examples"


class TaskType(StrEnum):
    """What the model predicts; picks the default gate metrics and how predictions are scored."""

    BINARY = "binary_classification"
    MULTICLASS = "multiclass_classification"
    REGRESSION = "regression"


# ---- 1. Dataset ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSchema:
    """The contract between landing area, validation suite, curated dataset and trainer.

    ``columns`` maps each column to its pandas dtype in the curated dataset. ``timestamp`` is the event
    time: a partition holds the events of one UTC day, and the holdout is the newest slice by it.
    ``row_id`` is unique per row (a stable order for equal timestamps).
    """

    name: str  # what one row is, in words used in logs ("ad impressions", "digit images")
    columns: Mapping[str, str]
    label: str
    timestamp: str
    row_id: str
    label_values: tuple[Any, ...] = ()  # the allowed labels of a classification task; () for regression
    landing_file: str = "part.parquet"  # <landing>/dt=YYYY-MM-DD/<landing_file>
    curated_path: str = "data/curated.parquet"  # the curated training set inside the data repository

    def __post_init__(self) -> None:
        missing = [c for c in (self.label, self.timestamp, self.row_id) if c not in self.columns]
        if missing:
            raise ValueError(
                f"DatasetSchema {self.name!r}: label/timestamp/row_id columns {missing} are not in columns "
                f"{list(self.columns)}; add them to columns or name existing ones."
            )

    @property
    def features(self) -> list[str]:
        """Every column except label, timestamp and row id."""
        return [c for c in self.columns if c not in (self.label, self.timestamp, self.row_id)]


@runtime_checkable
class Dataset(Protocol):
    """A landed dataset: its schema, its Great Expectations suite, and a simulated upstream.

    ``expectations`` returns the suite of one day as ``tollgate.data.suite.Spec`` items, each with
    ``level`` ``row`` (a failing row is quarantined with the expectation's name; the others go on) or
    ``batch`` (a failure rejects the whole partition). ``thresholds`` are the batch bounds configured
    through Variables (row counts, label rate, quarantine share); a dataset uses those that fit it.
    ``generate`` is the simulated upstream (demos, tests, ``tollgate_simulate_upstream``): one day of
    rows, with an injected fault from ``faults`` when asked. ``truncated`` (a cut-off file) is handled by
    the core for every dataset.
    """

    schema: DatasetSchema
    faults: Mapping[str, str]  # fault name -> what it does and whether it is row- or batch-level

    def expectations(self, day: date, thresholds: GateThresholds) -> list[Spec]: ...

    def generate(
        self, day: date, rows: int, seed: int, fault: str | None = None, share: float = 0.02
    ) -> pd.DataFrame: ...


# ---- 2. Trainer contract ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainerContract:
    """Any command that honours the trainer contract is launched, retried and registered the same way.

    Inputs (each an argument ``--name value`` or env ``TOLLGATE_<NAME>``; arguments win):
    ``--training-run-id`` (the same for every attempt), ``--checkpoint-uri`` (resume from here),
    ``--output-uri``, ``--data-repo`` / ``--data-rev`` / ``--data-path`` (the DVC dataset version) or
    ``--data-file``, ``--mlflow-uri``, ``--grace-seconds`` and the hyperparameters ``--seed``,
    ``--epochs``, ``--batch-size``, ``--lr``, ``--checkpoint-every``, ``--quality`` (normal/degraded).
    Exit codes: 0 done, 2 bad input (not retried), 75 preempted: on SIGTERM save a checkpoint within
    ``--grace-seconds`` and exit 75 (retried, resumes), anything else a failure (small retry budget).
    Outputs under ``--output-uri``: the model files, then ``result.json`` last, holding at least
    ``{"metrics": {...}, "steps": N, "mlflow_run_id": ...}``. The ``tollgate_torch`` package gives a
    PyTorch loop the checkpoint store, the SIGTERM guard and exact-resume state.
    """

    command: tuple[str, ...]  # e.g. ("python", "-m", "tollgate_examples.digits.train")
    experiment: str  # MLflow experiment of the training runs
    defaults: Mapping[str, Any] = field(default_factory=dict)  # hyperparameters the example suggests


# ---- 3. Model packaging -----------------------------------------------------------------------------
@runtime_checkable
class Predictor(Protocol):
    """The trained model as the pyfunc, the gates and the input example see it."""

    feature_columns: list[str]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelPackaging:
    """How the trainer's output becomes an MLflow pyfunc (signed and verified by the core unchanged).

    ``model_code`` is a "model from code" file that calls ``mlflow.models.set_model(...)`` with a
    ``PythonModel`` whose ``load_context`` reads ``context.artifacts["trained"]`` (the trainer's output
    folder). ``code_paths`` travel inside the logged model (the predictor's code); ``load_predictor``
    opens a trainer output folder (used for the signature's input example and by tests).
    """

    model_code: Path
    code_paths: tuple[Path, ...]
    load_predictor: Callable[[str | Path], Predictor]
    input_example: Callable[[Predictor], pd.DataFrame]
    pip_requirements: tuple[str, ...] = ()


# ---- 4. Gate metrics --------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricRule:
    """One metric the offline gate compares: direction, absolute bound, allowed regression."""

    name: str
    higher_is_better: bool
    bound: float  # a floor when higher is better, else a ceiling (applies to every challenger)
    max_regression: float  # how much worse than the champion on the same holdout is still allowed
    label: str = ""  # how reasons spell it ("AUC"); default: the name with spaces

    def problems(self, challenger: float, champion: float | None) -> list[str]:
        label = self.label or self.name.replace("_", " ")
        found = []
        if not math.isfinite(challenger):
            return [f"{label} is {challenger} (not a number)"]
        if self.higher_is_better and challenger < self.bound:
            found.append(f"{label} {challenger:.4f} is below the floor {self.bound:.4f}")
        if not self.higher_is_better and challenger > self.bound:
            found.append(f"{label} {challenger:.4f} is above the ceiling {self.bound:.4f}")
        if champion is not None:
            worse = (champion - challenger) if self.higher_is_better else (challenger - champion)
            if worse > self.max_regression:
                side = "below" if self.higher_is_better else "above"
                kind = "drop" if self.higher_is_better else "increase"
                found.append(
                    f"{label} {challenger:.4f} is {worse:.4f} {side} the champion's {champion:.4f} "
                    f"(allowed {kind} {self.max_regression:.4f})"
                )
        return found


# The metrics each task type is gated on by default (an example may choose others of the same task).
DEFAULT_RULES: dict[TaskType, tuple[MetricRule, ...]] = {
    TaskType.BINARY: (
        MetricRule("auc", True, 0.60, 0.01, label="AUC"),
        MetricRule("log_loss", False, 0.40, 0.005),
        MetricRule("calibration_error", False, 0.05, 0.02),
    ),
    TaskType.MULTICLASS: (
        MetricRule("accuracy", True, 0.80, 0.01),
        MetricRule("macro_f1", True, 0.80, 0.01),
        MetricRule("log_loss", False, 0.80, 0.05),
    ),
    TaskType.REGRESSION: (
        MetricRule("rmse", False, math.inf, 0.0),
        MetricRule("mae", False, math.inf, 0.0),
    ),
}


@dataclass(frozen=True)
class GateMetrics:
    """Which metrics the offline gate compares, for which task type, with which bounds.

    Configuration overrides the example's rules (Variable ``tollgate_offline_gate``, JSON): per metric
    ``{"accuracy": {"bound": 0.9, "max_regression": 0.005}}``. Unknown metrics or keys are refused.
    """

    task: TaskType
    rules: tuple[MetricRule, ...]

    @classmethod
    def for_task(cls, task: TaskType) -> GateMetrics:
        return cls(task, DEFAULT_RULES[task])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.rules)

    def rule(self, name: str) -> MetricRule:
        return next(r for r in self.rules if r.name == name)

    def with_overrides(self, overrides: Mapping[str, Mapping[str, float]]) -> GateMetrics:
        known = {r.name: r for r in self.rules}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"offline gate: unknown metrics {unknown}; this example gates {sorted(known)}")
        rules = []
        for name, rule in known.items():
            change = dict(overrides.get(name) or {})
            bad = sorted(set(change) - {"bound", "max_regression"})
            if bad:
                raise ValueError(f"offline gate: {name} has unknown keys {bad}; use bound, max_regression")
            rules.append(replace(rule, **{k: float(v) for k, v in change.items()}))
        return replace(self, rules=tuple(rules))

    def thresholds(self) -> dict[str, float]:
        """Flat ``<metric>_bound`` / ``<metric>_max_regression`` for evidence and MLflow."""
        flat: dict[str, float] = {}
        for rule in self.rules:
            flat[f"{rule.name}_{'floor' if rule.higher_is_better else 'ceiling'}"] = rule.bound
            flat[f"{rule.name}_max_regression"] = rule.max_regression
        return flat

    def problems(self, challenger: Mapping[str, float], champion: Mapping[str, float] | None) -> list[str]:
        found = []
        for rule in self.rules:
            if rule.name not in challenger:
                found.append(f"{rule.name} is missing from the challenger's metrics {sorted(challenger)}")
                continue
            theirs = None if champion is None else champion.get(rule.name)
            found += rule.problems(float(challenger[rule.name]), theirs)
        return found

    def as_dict(self) -> dict[str, Any]:
        return {"task": str(self.task), "rules": [asdict(r) for r in self.rules]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GateMetrics:
        return cls(TaskType(raw["task"]), tuple(MetricRule(**rule) for rule in raw["rules"]))


# ---- the example that binds the four ----------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    """One use case: dataset, trainer, packaging and gate metrics, plus a scorer for the gates.

    ``score(labels, predictions)`` returns the metrics of ``gate`` (and more) for the holdout;
    ``predictions`` are what the pyfunc's ``predict`` returns (probabilities of the positive class for a
    binary task, one row of class probabilities per input for a multiclass one, values for regression).
    """

    name: str
    dataset: Dataset
    trainer: TrainerContract
    packaging: ModelPackaging
    gate: GateMetrics
    score: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    registered_model: str  # default registered-model name (Variable tollgate_registered_model overrides)


def example_module(name: str | None = None) -> str:
    """The module path of an example name (``ctr`` -> ``tollgate_examples.ctr``) or a dotted path as is."""
    chosen = (name or os.environ.get(EXAMPLE_ENV) or DEFAULT_EXAMPLE).strip()
    return chosen if "." in chosen else f"{EXAMPLES_PACKAGE}.{chosen}"


def load(name: str | None = None) -> Example:
    """The example named (default: env ``TOLLGATE_EXAMPLE``, else ``ctr``), with a clear error."""
    module_path = example_module(name)
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        if exc.name and module_path.startswith(exc.name):
            raise ValueError(
                f"Example {module_path!r} (env {EXAMPLE_ENV}) is not importable: set {EXAMPLE_ENV} to a "
                f"shipped example ({', '.join(shipped())}) or to the dotted path of your own module, and "
                "make sure it is on the Python path (include/ in the Airflow and training images)."
            ) from None
        raise
    example = getattr(module, "EXAMPLE", None)
    if not isinstance(example, Example):
        raise ValueError(
            f"Module {module_path!r} has no EXAMPLE = tollgate.extensions.Example(...); see README "
            "'Use it for your own model'."
        )
    return example


def active() -> Example:
    """The example this process runs (read at call time: change the env, change the example)."""
    return load(None)


def configured() -> str:
    """The configured example's name (env ``TOLLGATE_EXAMPLE``, else ``ctr``)."""
    return (os.environ.get(EXAMPLE_ENV) or DEFAULT_EXAMPLE).strip()


def scoped(location: str, name: str | None = None) -> str:
    """An example's own copy of a shared location (data repository, DVC remote): the default example
    keeps the configured one, another gets ``<location>-<name>``, so their versions never mix."""
    chosen = (name or configured()).strip()
    if chosen == DEFAULT_EXAMPLE:
        return location
    return f"{location.rstrip('/')}-{chosen.rsplit('.', 1)[-1]}"


@contextmanager
def using(name: str | None) -> Iterator[Example]:
    """Run a block with example ``name`` active (None: the configured one); the env is restored after."""
    chosen = (name or "").strip() or configured()
    example = load(chosen)  # a bad name fails here, with the fix, before any work
    previous = os.environ.get(EXAMPLE_ENV)
    os.environ[EXAMPLE_ENV] = chosen
    try:
        yield example
    finally:
        if previous is None:
            os.environ.pop(EXAMPLE_ENV, None)
        else:
            os.environ[EXAMPLE_ENV] = previous


def shipped() -> list[str]:
    """The examples under ``include/tollgate_examples``."""
    root = Path(__file__).resolve().parents[1] / EXAMPLES_PACKAGE
    return sorted(p.parent.name for p in root.glob("*/__init__.py"))


def gate_metrics_from_json(example: Example, text: str | None) -> GateMetrics:
    """The example's gate metrics with the Variable's overrides (empty = the example's own)."""
    if not text or not text.strip():
        return example.gate
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"offline gate thresholds are not valid JSON ({error}): {text!r}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ValueError(
            'offline gate thresholds must map metric to its bounds {"bound": x, "max_regression": y}, e.g. '
            f'{{"{example.gate.names[0]}": {{"bound": 0.9}}}}; got {text!r}'
        )
    return example.gate.with_overrides(raw)
