"""The verdict of one shadow or canary stage: PASS, FAIL or INCONCLUSIVE with its evidence.

Order of decision: the hard error limit FAILs whatever the rest says; a broken split (SRM) or too
few samples gives INCONCLUSIVE, never PASS; then Holm across the stage's harm tests at the stage's
share of the rollout's alpha: any rejection FAILs; a large output drift (PSI) is INCONCLUSIVE; else PASS.
The evidence record is JSON-serialisable and carries a sha256 of its canonical form.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as sps

from tollgate.evaluation import canary_schema as col
from tollgate.evaluation import canary_stats as st
from tollgate.evaluation.canary_settings import CanarySettings
from tollgate.extensions import TaskType

if TYPE_CHECKING:
    import pandas as pd

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


def seal(record: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return {**record, "sha256": hashlib.sha256(body.encode()).hexdigest()}


def decide(
    stage: str,
    kind: str,
    results: list[st.Result],
    reasons: list[str],
    hard_fail: bool,
    invalid: bool,
    drift_flag: bool,
    settings: CanarySettings,
    extra: dict,
) -> dict[str, Any]:
    alpha = settings.stage_alpha(stage)
    tests = {r.name: r.p_value for r in results if r.p_value is not None}
    rejected = st.holm(tests, alpha) if tests else {}
    harms = [name for name, rej in rejected.items() if rej]
    if hard_fail:
        verdict = FAIL
    elif invalid:
        verdict = INCONCLUSIVE
    elif harms:
        verdict = FAIL
        reasons = reasons + [f"{name}: worse than tolerated (Holm at alpha {alpha:.4g})" for name in harms]
    elif drift_flag:
        verdict = INCONCLUSIVE
    else:
        verdict = PASS
    return seal(
        {
            "stage": stage,
            "kind": kind,
            "verdict": verdict,
            "reasons": reasons,
            "stage_alpha": alpha,
            "rollout_alpha": settings.rollout_alpha,
            "statistics": [{**r.as_dict(), "rejected": rejected.get(r.name, False)} for r in results],
            **extra,
        }
    )


def analyse_canary(log: pd.DataFrame, stage: str, settings: CanarySettings | None = None) -> dict[str, Any]:
    """Canary stage: SRM, minimum samples, errors (mSPRT + hard limit), latency shift and p99 ratio."""
    s = settings or CanarySettings()
    col.require_columns(log, (col.ARM, col.STATUS, col.LATENCY_MS), "prediction log")
    if stage not in s.canary_weights:
        raise ValueError(f"no canary weight for stage {stage!r}; set canary_weights[{stage!r}]")
    weight = s.canary_weights[stage]
    arms = log[col.ARM]
    unknown = set(arms.unique()) - {col.CHAMPION, col.CHALLENGER}
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; expected {col.CHAMPION!r} and {col.CHALLENGER!r}")
    c, b = log[arms == col.CHALLENGER], log[arms == col.CHAMPION]
    n_c, n_b = len(c), len(b)
    reasons: list[str] = []
    srm_p = st.sample_ratio_mismatch([n_c, n_b], [weight, 1 - weight]) if n_c + n_b else 0.0
    invalid = False
    if srm_p < s.srm_p_value:
        invalid = True
        reasons.append(f"sample ratio mismatch: {n_c}/{n_b} against weight {weight} (p={srm_p:.2g})")
    if n_c < s.min_challenger_samples or n_b < s.min_champion_samples:
        invalid = True
        reasons.append(
            f"too few samples: challenger {n_c} (min {s.min_challenger_samples}), "
            f"champion {n_b} (min {s.min_champion_samples})"
        )
    results, more, hard_fail, errors = compare_errors_and_latency(c, b, s)
    reasons += more
    extra = {
        "samples": {"challenger": n_c, "champion": n_b},
        "canary_weight": weight,
        "srm_p_value": srm_p,
        "errors": errors,
    }
    return decide(stage, "canary", results, reasons, hard_fail, invalid, False, s, extra)


def compare_errors_and_latency(
    c: pd.DataFrame, b: pd.DataFrame, s: CanarySettings
) -> tuple[list[st.Result], list[str], bool, dict[str, int]]:
    """The new variant ``c`` against the baseline ``b``: errors (mSPRT + hard limit), latency shift and
    p99 ratio. Returns (tests, reasons, hard limit breached, error counts)."""
    n_c, n_b = len(c), len(b)
    errors_c = int((c[col.STATUS] != col.STATUS_OK).sum())
    errors_b = int((b[col.STATUS] != col.STATUS_OK).sum())
    reasons: list[str] = []
    hard_fail = n_c > 0 and errors_c / n_c > s.max_error_rate
    if hard_fail:
        reasons.append(f"error rate {errors_c / n_c:.4f} above the hard limit {s.max_error_rate}")
    results: list[st.Result] = []
    if n_c and n_b:
        results.append(st.msprt_error_rate(errors_c, n_c, errors_b, n_b, s.msprt_tau))
    lat_c = c.loc[c[col.STATUS] == col.STATUS_OK, col.LATENCY_MS].to_numpy(float)
    lat_b = b.loc[b[col.STATUS] == col.STATUS_OK, col.LATENCY_MS].to_numpy(float)
    if len(lat_c) >= 2 and len(lat_b) >= 2:
        rng = np.random.default_rng(s.seed)
        if len(lat_b) > s.max_baseline_rows:
            lat_b = rng.choice(lat_b, s.max_baseline_rows, replace=False)
        tolerance = max(s.latency_floor_ms, s.latency_relative * float(np.median(lat_b)))
        results.append(st.latency_shift(lat_c, lat_b, tolerance, seed=s.seed))
        results.append(st.p99_ratio(lat_c, lat_b, s.p99_ratio_limit, s.bootstrap_resamples, seed=s.seed))
    return results, reasons, hard_fail, {"challenger": errors_c, "champion": errors_b}


def _matrix(values: pd.Series) -> np.ndarray:
    return np.vstack([np.asarray(v, float) for v in values])


def analyse_shadow(
    log: pd.DataFrame,
    labels: pd.DataFrame,
    task: TaskType | str,
    stage: str = "shadow",
    settings: CanarySettings | None = None,
) -> dict[str, Any]:
    """Shadow stage on pairs (champion served, challenger mirrored) with matured labels.

    Binary: ΔAUC (DeLong), Δ log loss (paired bootstrap), challenger O/E. Multiclass: Δ accuracy
    (paired z), Δ log loss (paired bootstrap). Regression: Δ absolute error (paired z).
    Agreement (PSI, Spearman, mean |Δ|) is computed on every pair, labelled or not.
    """
    s = settings or CanarySettings()
    task = TaskType(task)
    joined = col.join_labels(log, labels)
    pairs = joined[joined[col.SHADOW_OUTPUT].notna() & (joined[col.STATUS] == col.STATUS_OK)]
    labelled = pairs[pairs[col.LABEL].notna()]
    reasons: list[str] = []
    invalid = len(labelled) < s.min_labelled_pairs
    if invalid:
        reasons.append(f"too few labelled shadow pairs: {len(labelled)} (min {s.min_labelled_pairs})")
    results: list[st.Result] = []
    agreement: dict[str, float] = {}
    drift_flag = False
    if len(pairs) >= 2:
        if task is TaskType.MULTICLASS:
            served, shadow = _matrix(pairs[col.SERVED_OUTPUT]), _matrix(pairs[col.SHADOW_OUTPUT])
            flat_b, flat_c = served.max(axis=1), shadow.max(axis=1)  # confidence distributions
        else:
            flat_b = pairs[col.SERVED_OUTPUT].to_numpy(float)
            flat_c = pairs[col.SHADOW_OUTPUT].to_numpy(float)
        agreement = {
            "psi": st.psi(flat_b, flat_c),
            "spearman": float(sps.spearmanr(flat_c, flat_b).statistic),
            "mean_abs_difference": float(np.mean(np.abs(flat_c - flat_b))),
        }
        if agreement["psi"] > s.psi_inconclusive:
            drift_flag = True
            reasons.append(f"output PSI {agreement['psi']:.3f} above {s.psi_inconclusive}: people must look")
    if len(labelled) >= 2:
        y = labelled[col.LABEL].to_numpy()
        if task is TaskType.BINARY:
            pb = labelled[col.SERVED_OUTPUT].to_numpy(float)
            pc = labelled[col.SHADOW_OUTPUT].to_numpy(float)
            y = y.astype(int)
            if 0 < y.sum() < len(y):
                results.append(st.auc_non_inferiority(y, pc, pb, s.auc_margin))
            results.append(_log_loss_harm(y, pc, pb, s))
            results.append(st.observed_expected(y, pc, s.observed_expected_tolerance))
        elif task is TaskType.MULTICLASS:
            pb, pc = _matrix(labelled[col.SERVED_OUTPUT]), _matrix(labelled[col.SHADOW_OUTPUT])
            y = y.astype(int)
            harm = (pb.argmax(axis=1) == y).astype(float) - (pc.argmax(axis=1) == y).astype(float)
            results.append(st.paired_mean_harm("delta_accuracy_loss", harm, s.accuracy_margin))
            results.append(_log_loss_harm(y, pc, pb, s))
        else:
            y = y.astype(float)
            pb = labelled[col.SERVED_OUTPUT].to_numpy(float)
            pc = labelled[col.SHADOW_OUTPUT].to_numpy(float)
            results.append(st.paired_mean_harm("delta_abs_error", np.abs(pc - y) - np.abs(pb - y), 0.0))
    extra = {"task": str(task), "pairs": len(pairs), "labelled_pairs": len(labelled), "agreement": agreement}
    return decide(stage, "shadow", results, reasons, False, invalid, drift_flag, s, extra)


def _log_loss_harm(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, s: Any) -> Any:
    """Paired bootstrap of the challenger's extra log loss per row (binary and multiclass alike)."""
    return st.paired_bootstrap_harm(
        "delta_log_loss",
        st.log_loss_rows(y, challenger) - st.log_loss_rows(y, champion),
        s.log_loss_margin,
        s.bootstrap_resamples,
        s.seed,
    )
