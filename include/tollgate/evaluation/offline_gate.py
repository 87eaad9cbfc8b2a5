"""The offline quality gate: challenger and champion scored on the same fresh holdout.

The holdout is the newest slice (by event time) of the dataset version the challenger was trained on,
which the challenger never trained on. The first model ever (no champion) is held to absolute bounds;
later ones must also not regress against the champion by more than the allowed margins. Which metrics,
their direction, bounds and margins come from the active example's ``GateMetrics`` (by task type:
binary, multiclass, regression), overridden by the Variable ``tollgate_offline_gate``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tollgate.extensions import Example, GateMetrics, MetricRule, TaskType, gate_metrics_from_json

# The click-through gate's metrics (the binary task's defaults), kept for the flat legacy thresholds.
METRICS = ("auc", "log_loss", "calibration_error")
HIGHER_IS_BETTER = {"auc": True, "log_loss": False, "calibration_error": False}


@dataclass(frozen=True)
class GateThresholds:
    """The binary (click-through) gate in the flat form the Variable has always accepted."""

    # Absolute floors, applied to every challenger (and the only test for the first model ever).
    min_auc: float = 0.60
    max_log_loss: float = 0.40
    max_calibration_error: float = 0.05
    # Allowed regressions against the champion on the same holdout.
    max_auc_drop: float = 0.01
    max_log_loss_increase: float = 0.005
    max_calibration_error_increase: float = 0.02

    @classmethod
    def from_json(cls, text: str | None) -> GateThresholds:
        """Thresholds from the Variable's JSON; unknown keys are refused so a typo is not ignored."""
        if not text or not text.strip():
            return cls()
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"offline gate thresholds are not valid JSON ({error}): {text!r}") from None
        allowed = sorted(cls.__dataclass_fields__)
        unknown = set(values) - set(allowed)
        if unknown:
            raise ValueError(f"unknown offline gate thresholds {sorted(unknown)}; allowed: {allowed}")
        return cls(**{k: float(v) for k, v in values.items()})

    def as_gate_metrics(self) -> GateMetrics:
        return GateMetrics(
            TaskType.BINARY,
            (
                MetricRule("auc", True, self.min_auc, self.max_auc_drop, label="AUC"),
                MetricRule("log_loss", False, self.max_log_loss, self.max_log_loss_increase),
                MetricRule(
                    "calibration_error",
                    False,
                    self.max_calibration_error,
                    self.max_calibration_error_increase,
                ),
            ),
        )


def gate_metrics(example: Example, text: str | None, log: Any = print) -> GateMetrics:
    """The example's gate with the Variable's overrides. Three forms:

    * per metric, ``{"accuracy": {"bound": 0.9, "max_regression": 0.01}}``;
    * per example, ``{"digits": {"accuracy": {"bound": 0.9}}, "ctr": {...}}`` (one platform, several
      examples; an example not named keeps its own gate);
    * the flat click-through keys of ``GateThresholds`` (``{"min_auc": 0.65}``), which set the gate of a
      binary example on AUC, log loss and calibration error and do not apply to other examples.
    """
    from tollgate import extensions

    if not text or not text.strip():
        return example.gate
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        return gate_metrics_from_json(example, text)  # raises, quoting the text
    if isinstance(raw, dict) and raw and set(raw) <= {*extensions.shipped(), example.name}:
        chosen = raw.get(example.name)
        return gate_metrics_from_json(example, json.dumps(chosen)) if chosen else example.gate
    flat = isinstance(raw, dict) and raw and not any(isinstance(v, dict) for v in raw.values())
    if flat:
        if example.gate.task == TaskType.BINARY and set(example.gate.names) == set(METRICS):
            return GateThresholds.from_json(text).as_gate_metrics()
        GateThresholds.from_json(text)  # still refuses a typo
        log(
            f"Variable tollgate_offline_gate holds click-through thresholds ({text}); they do not apply to "
            f"example {example.name} ({example.gate.task}), which keeps its own gate. Set "
            f'{{"{example.name}": {{"<metric>": {{"bound": ...}}}}}} to change it.'
        )
        return example.gate
    return gate_metrics_from_json(example, text)


@dataclass
class GateDecision:
    gate: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    challenger: dict[str, float] = field(default_factory=dict)
    champion: dict[str, float] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    holdout_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    thresholds: GateMetrics | GateThresholds,
    holdout_rows: int = 0,
) -> GateDecision:
    """Compare metrics with the bounds and, when a champion exists, the allowed regressions."""
    gate = thresholds.as_gate_metrics() if isinstance(thresholds, GateThresholds) else thresholds
    reasons = gate.problems(challenger, champion)
    return GateDecision(
        gate="offline_quality",
        passed=not reasons,
        reasons=reasons,
        challenger=challenger,
        champion=champion,
        thresholds=asdict(thresholds) if isinstance(thresholds, GateThresholds) else gate.thresholds(),
        holdout_rows=holdout_rows,
    )


def metrics_table(
    challenger: dict[str, float], champion: dict[str, float] | None, gate: GateMetrics | None = None
) -> str:
    """A Markdown table of the challenger's gated metrics against the champion's."""
    rules = gate.rules if gate is not None else GateThresholds().as_gate_metrics().rules
    lines = ["| metric | challenger | champion | change |", "|---|---:|---:|---:|"]
    for rule in rules:
        name = rule.name
        new = challenger[name]
        if champion is None or name not in champion:
            lines.append(f"| {name} | {new:.4f} | (none yet) | |")
            continue
        old = champion[name]
        better = (new >= old) if rule.higher_is_better else (new <= old)
        lines.append(
            f"| {name} | {new:.4f} | {old:.4f} | {new - old:+.4f} {'better' if better else 'worse'} |"
        )
    return "\n".join(lines)
