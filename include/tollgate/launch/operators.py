"""The local training operator: one Airflow try runs one attempt of the trainer as a child process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from tollgate.launch.attempts import begin_attempt, end_attempt
from tollgate.launch.classify import Classification, Outcome, classify_exit
from tollgate.launch.local import LocalLauncher
from tollgate.launch.plan import LaunchPlan


class LocalTrainingOperator(BaseOperator):
    """Run the training job of ``plan`` (a LaunchPlan dict, usually an XComArg) as a local process.

    The trainer's output streams into the task log; an injected spot interruption (from the plan) is
    delivered for demos and tests; if Airflow kills the task, the trainer's process group is stopped the
    way the kubelet would (SIGTERM, grace, SIGKILL).
    """

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#e8f1fb"

    def __init__(self, *, plan: Mapping[str, Any] | Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self._launcher: LocalLauncher | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        plan = LaunchPlan.from_dict(self.plan)
        attempt = begin_attempt(context, plan, self.log.info)
        self._launcher = LocalLauncher(attempt.job, log=self._emit)
        result = self._launcher.run(attempt.interruption)
        if result.stopped:
            classification = Classification(
                Outcome.LOST, "the Airflow task was stopped while training (on_kill)", result.exit_code
            )
        else:
            classification = classify_exit(result.exit_code, interrupted=result.interrupted)
        if classification.outcome == Outcome.FAILED and result.tail:
            self.log.error("Last trainer output:\n%s", "\n".join(result.tail[-15:]))
        return end_attempt(
            attempt,
            classification,
            self.log.info,
            resumed_from_step=result.resumed_from_step,
            last_step=result.last_step,
        )

    def on_kill(self) -> None:
        if self._launcher is not None:
            self._launcher.stop("the Airflow task was killed")

    def _emit(self, line: str) -> None:
        self.log.info("%s", line)
