"""The offline quality gate: challenger and champion scored on the same fresh holdout.

The holdout is the newest slice (by event time) of the dataset version the challenger was trained on,
which the challenger never trained on. The first model ever (no champion) is held to absolute floors;
later ones must also not regress against the champion by more than the allowed margins.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

METRICS = ("auc", "log_loss", "calibration_error")
HIGHER_IS_BETTER = {"auc": True, "log_loss": False, "calibration_error": False}


@dataclass(frozen=True)
class GateThresholds:
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
    thresholds: GateThresholds,
    holdout_rows: int = 0,
) -> GateDecision:
    """Compare metrics with the floors and, when a champion exists, the allowed regressions."""
    reasons: list[str] = []
    t = thresholds
    if challenger["auc"] < t.min_auc:
        reasons.append(f"AUC {challenger['auc']:.4f} is below the floor {t.min_auc:.4f}")
    if challenger["log_loss"] > t.max_log_loss:
        reasons.append(f"log loss {challenger['log_loss']:.4f} is above the ceiling {t.max_log_loss:.4f}")
    if challenger["calibration_error"] > t.max_calibration_error:
        reasons.append(
            f"calibration error {challenger['calibration_error']:.4f} is above the ceiling "
            f"{t.max_calibration_error:.4f}"
        )
    if champion is not None:
        auc_drop = champion["auc"] - challenger["auc"]
        if auc_drop > t.max_auc_drop:
            reasons.append(
                f"AUC {challenger['auc']:.4f} is {auc_drop:.4f} below the champion's {champion['auc']:.4f} "
                f"(allowed drop {t.max_auc_drop:.4f})"
            )
        ll_rise = challenger["log_loss"] - champion["log_loss"]
        if ll_rise > t.max_log_loss_increase:
            reasons.append(
                f"log loss {challenger['log_loss']:.4f} is {ll_rise:.4f} above the champion's "
                f"{champion['log_loss']:.4f} (allowed increase {t.max_log_loss_increase:.4f})"
            )
        ce_rise = challenger["calibration_error"] - champion["calibration_error"]
        if ce_rise > t.max_calibration_error_increase:
            reasons.append(
                f"calibration error {challenger['calibration_error']:.4f} is {ce_rise:.4f} above the "
                f"champion's {champion['calibration_error']:.4f} "
                f"(allowed increase {t.max_calibration_error_increase:.4f})"
            )
    return GateDecision(
        gate="offline_quality",
        passed=not reasons,
        reasons=reasons,
        challenger=challenger,
        champion=champion,
        thresholds=asdict(thresholds),
        holdout_rows=holdout_rows,
    )


def metrics_table(challenger: dict[str, float], champion: dict[str, float] | None) -> str:
    """A Markdown table of the challenger's metrics against the champion's."""
    lines = ["| metric | challenger | champion | change |", "|---|---:|---:|---:|"]
    for name in METRICS:
        new = challenger[name]
        if champion is None:
            lines.append(f"| {name} | {new:.4f} | (none yet) | |")
            continue
        old = champion[name]
        better = (new >= old) if HIGHER_IS_BETTER[name] else (new <= old)
        lines.append(
            f"| {name} | {new:.4f} | {old:.4f} | {new - old:+.4f} {'better' if better else 'worse'} |"
        )
    return "\n".join(lines)
