"""Retry budgets: preemptions and failures are counted apart, and each has its own limit.

Plain Python. A preemption is not a bug, so it draws on a generous budget and resumes from the checkpoint;
a real failure gets a small budget (and bad input none), so broken code or data fails fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tollgate.launch.classify import Classification, Outcome


@dataclass(frozen=True)
class Budgets:
    preemptions: int = 5
    failures: int = 1
    on_demand_last_attempt: bool = True

    def __post_init__(self) -> None:
        if self.preemptions < 0 or self.failures < 0:
            raise ValueError(
                f"Retry budgets must be >= 0 (preemptions={self.preemptions}, failures={self.failures})."
            )


@dataclass(frozen=True)
class Tally:
    """Attempts of the current series (since the task was last cleared) by outcome, this one included."""

    attempts: int = 0
    preemptions: int = 0
    failures: int = 0


@dataclass(frozen=True)
class Decision:
    action: Literal["succeed", "retry", "fail"]
    message: str


def wants_on_demand(preemptions_before: int, budgets: Budgets) -> bool:
    """Run this attempt on on-demand capacity: one more preemption would exhaust the budget."""
    return budgets.on_demand_last_attempt and preemptions_before >= budgets.preemptions


def decide(classification: Classification, tally: Tally, budgets: Budgets) -> Decision:
    """What to do after an attempt, given the tally that already includes it."""
    outcome = classification.outcome
    if outcome == Outcome.SUCCEEDED:
        return Decision("succeed", f"attempt {tally.attempts} succeeded")
    if classification.is_preemption:
        if tally.preemptions > budgets.preemptions:
            return Decision(
                "fail",
                f"Spot preemption budget exhausted: {tally.preemptions} preemptions, budget "
                f"{budgets.preemptions} (last: {classification.reason}). The checkpoints are kept; raise the "
                "budget (Param preemption_budget or Variable tollgate_preemption_budget) and clear the task "
                "to resume, or run on on-demand capacity (Variable tollgate_on_demand_last_attempt).",
            )
        return Decision(
            "retry",
            f"Spot preemption {tally.preemptions} of {budgets.preemptions} ({classification.reason}); "
            "the next attempt resumes from the last checkpoint.",
        )
    if not classification.retryable:
        return Decision(
            "fail",
            f"Training failed and will not be retried: {classification.reason}. "
            "Fix the input named in the log above and trigger a new run.",
        )
    if tally.failures > budgets.failures:
        return Decision(
            "fail",
            f"Training failed: {classification.reason}. Failure budget {budgets.failures} used up "
            f"({tally.failures} failures); this is not a preemption, see the trainer log above.",
        )
    return Decision(
        "retry",
        f"Training failed ({classification.reason}); failure retry {tally.failures} of {budgets.failures}.",
    )
