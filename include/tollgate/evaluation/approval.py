"""The human approval step: Airflow's HITL ``ApprovalOperator`` with the evidence resolved at run time.

Subject and body come from the evidence task's XCom, the assigned approvers from the
``tollgate_approvers`` Variable and the response timeout from the run's ``approval_timeout_minutes``
Param (carried in the evidence): none of them is known when the DAG file is parsed. A timeout
answers with the default, ``Reject``, so silence never promotes a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param


def approval_form() -> dict[str, Param]:
    """The fields the approver fills in beside Approve / Reject (pass as the operator's ``params``)."""
    return {
        "comment": Param(
            "",
            type="string",
            title="Comment",
            description="Why you approve or reject; recorded on the model version.",
        )
    }


ANSWER_KEY = "answer"  # XCom key of the approval's answer (chosen option, comment, who, when)


class EvidenceApprovalOperator(ApprovalOperator):
    def __init__(
        self, *, evidence_task_id: str, outcome_notifiers: Sequence[Any] = (), **kwargs: Any
    ) -> None:
        super().__init__(subject="Model promotion approval", defaults=["Reject"], **kwargs)
        self.evidence_task_id = evidence_task_id
        # Called with the context once the answer (or the timeout's default) is recorded. Not
        # on_success_callback: a task resumed from awaiting input does not run it (Airflow 3.3.2).
        self.outcome_notifiers = list(outcome_notifiers)

    def execute(self, context: Any) -> Any:
        from airflow.sdk import Variable

        from tollgate.config import default_for
        from tollgate.evaluation.evidence import approval_body, approval_subject

        evidence = context["ti"].xcom_pull(task_ids=self.evidence_task_id)
        self.subject = approval_subject(evidence)
        self.body = approval_body(evidence)
        approvers = Variable.get("tollgate_approvers", default=default_for("tollgate_approvers"))
        self.assigned_users = [{"id": user, "name": user} for user in approvers.replace(",", " ").split()]
        minutes = float(evidence["approval_timeout_minutes"])
        self.response_timeout = timedelta(minutes=minutes)
        self.log.info(
            "Asking %s to approve %s v%s (answer within %.1f min; no answer counts as Reject)\n%s",
            approvers,
            evidence["model_name"],
            evidence["version"],
            minutes,
            self.body,
        )
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        # Keep the answer under its own key before the operator skips downstream tasks on Reject
        # (that path pushes no return value), so the decision tasks read one record either way.
        if "error" not in event:
            context["ti"].xcom_push(
                key=ANSWER_KEY,
                value={
                    "chosen_options": list(event["chosen_options"]),
                    "params_input": dict(event.get("params_input") or {}),
                    "responded_by_user": event.get("responded_by_user"),
                    "responded_at": str(event.get("responded_at")),
                },
            )
            for notifier in self.outcome_notifiers:
                notifier(context)
        return super().execute_complete(context, event)
