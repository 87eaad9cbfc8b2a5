"""Defaults of the shadow and canary analysis, each with why. One error budget per rollout.

The budget: ``rollout_alpha`` is the chance that a rollout of a challenger no worse than the
champion is rolled back anyway, over every check, stage and look. It is spent across stages in
proportion to ``stage_weights`` (Bonferroni across stages: valid whatever the stages' dependence)
and within a stage by Holm across the checks. Looks: the DAG's waits poll cheap counters, not
statistics, so each fixed-sample check is computed once per stage; the error-rate check is an
mSPRT, valid however often it is read, so a router guardrail may read it at every look.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class CanarySettings:
    # 1 % false rollbacks per rollout: a false rollback costs a retrain; a missed regression is
    # still watched after promotion, so the budget favours few false alarms.
    rollout_alpha: float = 0.01
    # shadow, canary 1 %, 5 %, 25 %: equal shares (no stage is more trustworthy a priori).
    stage_weights: dict[str, float] = field(
        default_factory=lambda: {"shadow": 1.0, "canary_1": 1.0, "canary_5": 1.0, "canary_25": 1.0}
    )
    canary_weights: dict[str, float] = field(
        default_factory=lambda: {"canary_1": 0.01, "canary_5": 0.05, "canary_25": 0.25}
    )
    # SRM: p < 0.001 means the split itself is broken (sticky routing, dropped logs): no verdict.
    srm_p_value: float = 0.001
    # challenger requests per canary stage: +1 pp errors on a 1 % base is detected >= 95 % at 8000.
    min_challenger_samples: int = 8000
    min_champion_samples: int = 8000
    # labelled shadow pairs: a -0.02 AUC change is detected >= 95 % at 10000 (benchmark).
    min_labelled_pairs: int = 10000
    # errors: a hard limit no statistics can excuse, and the mSPRT mixing prior's scale (the size
    # of change worth detecting: 1 percentage point).
    max_error_rate: float = 0.05
    msprt_tau: float = 0.01
    # latency (SERVING.md): a shift counts when above max(0.5 ms, 10 % of the champion median);
    # the p99 ratio counts above 1.10 (Mann-Whitney misses a variance increase).
    latency_floor_ms: float = 0.5
    latency_relative: float = 0.10
    p99_ratio_limit: float = 1.10
    bootstrap_resamples: int = 400
    # champion rows are plentiful at small weights; a random subset keeps the analysis in seconds.
    max_baseline_rows: int = 40000
    # quality non-inferiority margins: the worsening tolerated before it counts as a regression.
    auc_margin: float = 0.002
    log_loss_margin: float = 0.002
    accuracy_margin: float = 0.005
    observed_expected_tolerance: float = 0.10  # |O/E - 1| of the challenger tolerated
    # PSI convention: 0.1 warn, 0.25 a shift large enough that people must look (INCONCLUSIVE,
    # not FAIL: a different distribution is not evidence of a worse model).
    psi_warn: float = 0.10
    psi_inconclusive: float = 0.25
    seed: int = 0

    def stage_alpha(self, stage: str) -> float:
        if stage not in self.stage_weights:
            raise ValueError(
                f"unknown stage {stage!r}; configure it in stage_weights "
                f"(known: {sorted(self.stage_weights)})"
            )
        return self.rollout_alpha * self.stage_weights[stage] / sum(self.stage_weights.values())

    def as_dict(self) -> dict:
        return asdict(self)


def plan_fields(cls: type, text: str | None, variable: str, example: str) -> dict[str, Any]:
    """The fields of the plan dataclass ``cls`` that the Variable ``variable`` (JSON) overrides, with its
    ``"analysis"`` object turned into CanarySettings. Unknown keys are refused, naming the known ones."""
    import json

    raw = json.loads(text) if text and text.strip() else {}
    if not isinstance(raw, dict):
        raise ValueError(f"Variable {variable} must be a JSON object, e.g. {example}")
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"Variable {variable}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    analysis_raw = raw.pop("analysis", {}) or {}
    analysis_known = {f.name for f in fields(CanarySettings)}
    bad = set(analysis_raw) - analysis_known
    if bad:
        raise ValueError(
            f"Variable {variable}.analysis: unknown keys {sorted(bad)}; known: {sorted(analysis_known)}"
        )
    return {**raw, "analysis": replace(CanarySettings(), **analysis_raw)}
