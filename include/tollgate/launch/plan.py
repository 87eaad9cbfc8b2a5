"""A launch plan: the job plus how to run it (backend, retry budgets, an injected interruption).

Plain Python and JSON-safe, so one task builds it and the launch task (local or pod) receives it as XCom.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tollgate.launch.budget import Budgets
from tollgate.launch.job import TrainingJob
from tollgate.launch.local import Interruption

BACKENDS = ("local", "kubernetes")


@dataclass(frozen=True)
class LaunchPlan:
    job: TrainingJob
    backend: str = "local"
    budgets: Budgets = field(default_factory=Budgets)
    interruption: Interruption | None = None
    interrupt_attempts: int = 1  # how many attempts (from the first) get the injected interruption
    dataset: dict[str, Any] = field(default_factory=dict)  # lineage for the asset event and the report

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"Unknown launch backend {self.backend!r}: set the Variable tollgate_launch_backend to "
                f"one of {', '.join(BACKENDS)}."
            )

    def interruption_for(self, attempts_before: int) -> Interruption | None:
        """The interruption to inject into the attempt that follows ``attempts_before`` attempts."""
        return self.interruption if attempts_before < self.interrupt_attempts else None

    def to_dict(self) -> dict[str, Any]:
        interruption = self.interruption
        return {
            "job": self.job.to_dict(),
            "backend": self.backend,
            "budgets": {
                "preemptions": self.budgets.preemptions,
                "failures": self.budgets.failures,
                "on_demand_last_attempt": self.budgets.on_demand_last_attempt,
            },
            "interruption": None
            if interruption is None
            else {
                "at_step": interruption.at_step,
                "after_seconds": interruption.after_seconds,
                "sigkill": interruption.sigkill,
            },
            "interrupt_attempts": self.interrupt_attempts,
            "dataset": dict(self.dataset),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LaunchPlan:
        interruption = data.get("interruption")
        return cls(
            job=TrainingJob.from_dict(data["job"]),
            backend=data.get("backend", "local"),
            budgets=Budgets(**(data.get("budgets") or {})),
            interruption=Interruption(**interruption) if interruption else None,
            interrupt_attempts=int(data.get("interrupt_attempts", 1)),
            dataset=dict(data.get("dataset") or {}),
        )
