"""How often is the canary analysis wrong? Simulated rollouts, no services.

A/A rollouts (challenger = champion) run every stage (shadow, canary 1 %, 5 %, 25 %) at the
default sample sizes; a rollout is falsely rolled back when any stage says FAIL. Target: <= 1 %
over >= 1,000 rollouts (prints the exact 95 % upper bound). A/B rollouts give the detection rate
(verdict FAIL) of: +20 % latency at 5 % canary weight, +1 pp errors (1 % -> 2 %), ΔAUC about -0.02
in the shadow stage; target >= 95 % each at the default sample sizes, and the smallest share of the
default (1/4, 1/2, 1) that reaches it. Finally a +650 % latency regression with few points
(Kayenta #633) must not PASS.

Usage: python benchmarks/canary_power.py [--rollouts 1000] [--seed 0] [--jobs 2] [--aa-only]
(--jobs splits the A/A rollouts over processes, each with its own seed stream from --seed.)
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats

from tollgate.evaluation.canary_settings import CanarySettings
from tollgate.evaluation.canary_simulation import canary_log, shadow_log
from tollgate.evaluation.canary_verdict import FAIL, PASS, analyse_canary, analyse_shadow
from tollgate.extensions import TaskType

SETTINGS = CanarySettings()


def _canary_total(stage: str, scale: float = 1.0) -> int:
    """Requests for a stage so the challenger arm reaches its minimum (5 % headroom)."""
    need = max(SETTINGS.min_challenger_samples * scale, SETTINGS.min_champion_samples)
    return math.ceil(need / SETTINGS.canary_weights[stage] * 1.05)


def _settings(scale: float) -> CanarySettings:
    s = SETTINGS
    return CanarySettings(
        min_challenger_samples=int(s.min_challenger_samples * scale),
        min_labelled_pairs=int(s.min_labelled_pairs * scale),
    )


def upper_bound(failures: int, trials: int) -> float:
    """Exact (Clopper-Pearson) one-sided 95 % upper bound of a rate."""
    return 1.0 if failures >= trials else float(stats.beta.ppf(0.95, failures + 1, trials - failures))


def aa_rollout(rng: np.random.Generator) -> bool:
    """True when an A/A rollout is rolled back (any stage FAIL)."""
    log, labels = shadow_log(rng, math.ceil(SETTINGS.min_labelled_pairs * 1.05))
    if analyse_shadow(log, labels, TaskType.BINARY, settings=SETTINGS)["verdict"] == FAIL:
        return True
    for stage in SETTINGS.canary_weights:
        log = canary_log(rng, _canary_total(stage), SETTINGS.canary_weights[stage])
        if analyse_canary(log, stage, SETTINGS)["verdict"] == FAIL:
            return True
    return False


SCENARIOS = {
    "latency +20 % at 5 % weight": lambda rng, s: analyse_canary(
        canary_log(rng, _canary_total("canary_5", s), 0.05, latency_factor=1.2), "canary_5", _settings(s)
    ),
    "errors +1 pp (1 % -> 2 %)": lambda rng, s: analyse_canary(
        canary_log(rng, _canary_total("canary_5", s), 0.05, error_rate_c=0.02), "canary_5", _settings(s)
    ),
    "ΔAUC about -0.02 (shadow)": lambda rng, s: analyse_shadow(
        *shadow_log(rng, math.ceil(SETTINGS.min_labelled_pairs * s * 1.05), noise_c=1.25),
        TaskType.BINARY,
        settings=_settings(s),
    ),
}


def aa_failures(seed: np.random.SeedSequence, rollouts: int) -> int:
    """Falsely rolled-back rollouts among ``rollouts`` A/A rollouts drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return sum(aa_rollout(rng) for _ in range(rollouts))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rollouts", type=int, default=1000, help="A/A rollouts and A/B rollouts per scenario"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="processes for the A/A rollouts")
    parser.add_argument("--aa-only", action="store_true", help="only the A/A false-rollback rate")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"settings: rollout alpha {SETTINGS.rollout_alpha}, stages {list(SETTINGS.stage_weights)}")

    start = time.perf_counter()
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        shares = [args.rollouts // args.jobs + (i < args.rollouts % args.jobs) for i in range(args.jobs)]
        seeds = np.random.SeedSequence(args.seed).spawn(args.jobs)
        with ProcessPoolExecutor(args.jobs) as pool:
            failures = sum(pool.map(aa_failures, seeds, shares))
    else:
        failures = sum(aa_rollout(rng) for _ in range(args.rollouts))
    print(
        f"A/A: {failures}/{args.rollouts} rollouts falsely rolled back = {failures / args.rollouts:.2%}, "
        f"95 % upper bound {upper_bound(failures, args.rollouts):.2%} (target <= 1 %) "
        f"[{(time.perf_counter() - start) / args.rollouts:.2f} s per rollout, {args.jobs} process(es)]"
    )
    if args.aa_only:
        return

    for name, run in SCENARIOS.items():
        detected = sum(run(rng, 1.0)["verdict"] == FAIL for _ in range(args.rollouts))
        rate = detected / args.rollouts
        ladder = []
        for scale in (0.25, 0.5):
            reps = max(20, args.rollouts // 5)
            ladder.append((scale, sum(run(rng, scale)["verdict"] == FAIL for _ in range(reps)) / reps))
        enough = [scale for scale, r in ladder if r >= 0.95] + ([1.0] if rate >= 0.95 else [])
        unit, base = (
            ("labelled pairs", SETTINGS.min_labelled_pairs)
            if "shadow" in name
            else ("challenger requests", SETTINGS.min_challenger_samples)
        )
        need = (
            f"{min(enough):g} x default ({int(min(enough) * base)} {unit})"
            if enough
            else "more than the default"
        )
        ladder_text = ", ".join(f"{s:g}x: {r:.0%}" for s, r in ladder)
        print(
            f"A/B {name}: detected {detected}/{args.rollouts} = {rate:.1%} (target >= 95 %); "
            f"at {ladder_text}; needs {need}"
        )
    print(
        f"defaults: {SETTINGS.min_challenger_samples} challenger requests per canary stage, "
        f"{SETTINGS.min_labelled_pairs} labelled shadow pairs"
    )

    verdicts = [
        analyse_canary(canary_log(rng, 800, 0.05, latency_factor=7.5), "canary_5", SETTINGS)["verdict"]
        for _ in range(20)
    ]
    print(
        f"+650 % latency with about 40 challenger points: verdicts {sorted(set(verdicts))}; "
        f"passed {verdicts.count(PASS)}/20 (must be 0)"
    )


if __name__ == "__main__":
    main()
