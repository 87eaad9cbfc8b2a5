"""The rollout plan of the shadow and canary stages: which stages, how long each may wait, how much
traffic the local platform replays, and the analysis settings. One home for every default.

Configured by the Variable ``tollgate_rollout`` (JSON): top-level keys override ``RolloutPlan`` fields,
``"analysis"`` overrides ``CanarySettings`` fields. Its embedded default (``tollgate.config``) is the local
platform's: small sample sizes and short windows, and ``replay`` on, so a stage takes seconds there. In
production set it to ``{"replay": false}`` (real traffic, the production-size defaults of CanarySettings).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tollgate.evaluation.canary_settings import CanarySettings, plan_fields

SHADOW = "shadow"
# Stage ids are fixed at DAG parse time (task ids); their weights come from CanarySettings.canary_weights.
STAGES = (SHADOW, "canary_1", "canary_5", "canary_25")
CONTINUE, EXTEND, REJECT = "Continue", "Extend", "Reject"  # what approvers choose for an INCONCLUSIVE stage


def default_router_url() -> str:
    return (
        os.environ.get("TOLLGATE_ROUTER_URL")
        or f"http://127.0.0.1:{os.environ.get('TOLLGATE_ROUTER_PORT', '8000')}"
    )


@dataclass(frozen=True)
class RolloutPlan:
    router_url: str = field(default_factory=default_router_url)
    # Must every challenger with a champion face shadow and canary? False: a model no router serves
    # skips them (said in the evidence). Set true in production, where each model has its router.
    required: bool = False
    # How long one stage may wait for enough samples (and matured labels) before INCONCLUSIVE.
    stage_deadline_s: float = 1800.0
    # How often the triggerer reads the router's counters (two small GETs, no analysis).
    poll_s: float = 5.0
    # The lease each stage gives the rollout: its wait plus the analysis; a run that stops renewing
    # (killed, paused at a human decision) lets the router end the rollout itself.
    lease_margin_s: float = 120.0
    # Local platform: send replayed rows of the challenger's dataset (holdout part) as traffic, with
    # labels arriving ``label_delay_s`` later. Production: real traffic, replay off.
    replay: bool = False
    replay_rate: float = 400.0
    replay_margin: float = 1.3  # requests sent = needed samples / arm share * margin
    label_delay_s: float = 0.0
    # Extra time an approver's "Extend" gives a stage that was INCONCLUSIVE (factor on samples too).
    extend_factor: float = 2.0
    analysis: CanarySettings = field(default_factory=CanarySettings)

    @classmethod
    def from_json(cls, text: str | None) -> RolloutPlan:
        given = plan_fields(cls, text, "tollgate_rollout", '{"replay": false}')
        missing = [s for s in STAGES[1:] if s not in given["analysis"].canary_weights]
        if missing:
            raise ValueError(f"tollgate_rollout.analysis.canary_weights lacks stages {missing}")
        return replace(cls(), **given)

    def weight(self, stage: str) -> float:
        return 0.0 if stage == SHADOW else float(self.analysis.canary_weights[stage])

    def needed(self, stage: str, factor: float = 1.0) -> dict[str, int]:
        """Counter increases a stage waits for: shadow pairs, or requests per arm."""
        a = self.analysis
        if stage == SHADOW:
            return {"shadow_ok": math.ceil(a.min_labelled_pairs * factor)}
        return {
            "challenger": math.ceil(a.min_challenger_samples * factor),
            "champion": math.ceil(a.min_champion_samples * factor),
        }

    def replay_requests(self, stage: str, factor: float = 1.0) -> int:
        need = self.needed(stage, factor)
        if stage == SHADOW:
            return math.ceil(need["shadow_ok"] * self.replay_margin)
        w = self.weight(stage)
        return math.ceil(max(need["challenger"] / w, need["champion"] / (1 - w)) * self.replay_margin)

    def top_up_requests(self, stage: str, short: dict[str, float]) -> int:
        """Requests for another replay round that covers every arm's shortfall with 99.9 % probability.

        An arm's count over n requests is Binomial(n, share): sending the expected ``short / share`` falls
        short half the time. With lambda = n * share, the round covers ``k`` when lambda - 3.1 sqrt(lambda)
        >= k (the normal bound, z = 3.1), i.e. sqrt(lambda) = 1.55 + sqrt(1.55^2 + k)."""
        w = self.weight(stage)
        shares = {"challenger": w, "champion": 1.0 - w}
        n = 1
        for arm, k in short.items():
            share = max(shares.get(arm, 1.0), 1e-6)
            mean = (1.55 + math.sqrt(1.55**2 + max(k, 0.0))) ** 2
            n = max(n, math.ceil(mean / share))
        return n

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
