"""The two launch operators of train_model; one Airflow try = one training attempt.

``LocalTrainingOperator`` runs the trainer as a child process. ``SpotTrainingPodOperator`` runs it as a spot
pod through the provider's deferrable KubernetesPodOperator, which it creates only when the task runs: the
Kubernetes client takes seconds to import, and DAG files are parsed often (on a busy 2-core machine the
import alone ran past the dag-processor's 30 s import timeout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from tollgate.launch.attempts import Attempt, begin_attempt, end_attempt
from tollgate.launch.classify import Classification, Outcome, classify_exit, classify_pod
from tollgate.launch.local import LocalLauncher
from tollgate.launch.plan import LaunchPlan

if TYPE_CHECKING:
    from tollgate.launch.job import TrainingJob
    from tollgate.launch.kubernetes import TrainingPodOperator


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


class SpotTrainingPodOperator(BaseOperator):
    """Run one attempt of ``plan``'s job as a spot pod (deferrable KubernetesPodOperator).

    Each try opens an attempt in the ledger, renders the pod from the job (on-demand when the preemption
    budget is nearly spent), deletes the unfinished pods of earlier tries of the same training run and waits
    until they are gone (at most ``earlier_pods_timeout_seconds``, default the pod grace + 30 s), defers while
    the pod runs, and on re-entry classifies the finished pod as success, preemption or failure.
    ``pod_options`` go to the KubernetesPodOperator (e.g. ``kubernetes_conn_id``, ``in_cluster``,
    ``config_file``, ``startup_timeout_seconds``).
    """

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#d5e8f7"

    def __init__(
        self,
        *,
        plan: Mapping[str, Any] | Any,
        pod_options: Mapping[str, Any] | None = None,
        earlier_pods_timeout_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.pod_options = dict(pod_options or {})
        self.earlier_pods_timeout_seconds = earlier_pods_timeout_seconds
        self._pod_operator: TrainingPodOperator | None = None

    def pod_operator(self, job: TrainingJob, context: Mapping[str, Any] | None = None) -> TrainingPodOperator:
        """The provider operator that creates and watches this try's pod."""
        from tollgate.launch.kubernetes import TrainingPodOperator

        operator = TrainingPodOperator(task_id=self.task_id, **self.pod_options)
        operator.configure(job, context)
        return operator

    def execute(self, context: Any) -> Any:
        from airflow.sdk.bases.operator import ExecutorSafeguard
        from airflow.sdk.exceptions import TaskDeferred

        from tollgate.launch.kubernetes import remove_earlier_pods

        attempt = begin_attempt(context, LaunchPlan.from_dict(self.plan), self.log.info)
        pod: TrainingPodOperator | None = None
        try:
            self._pod_operator = pod = self.pod_operator(attempt.job, context)
            # One writer per checkpoint folder: pods of earlier tries are gone before this one is created.
            remove_earlier_pods(
                pod.client, attempt.job, log=self.log.info, wait_seconds=self.earlier_pods_timeout_seconds
            )
            token = ExecutorSafeguard.tracker.set(pod)  # run by this task, not "outside the task runner"
            try:
                pod.execute(context)  # creates the pod, then defers to the triggerer (-> trigger_reentry)
            finally:
                ExecutorSafeguard.tracker.reset(token)
        except TaskDeferred:
            raise
        except Exception as exc:
            if pod is None or pod.pod is None:
                self.log.exception("Could not start the training pod")
                failed = Classification(Outcome.FAILED, f"could not start the training pod: {exc}")
                return self._finish(attempt, failed, None)
            # deferrable=False in pod_options: the pod ran in this process and did not succeed
            where = {"name": pod.pod.metadata.name, "namespace": pod.pod.metadata.namespace}
            return self._finish(attempt, self._classify(pod, where, exc), where["name"])
        name = pod.pod.metadata.name if pod.pod is not None else None
        return self._finish(attempt, Classification(Outcome.SUCCEEDED, "pod succeeded", 0), name)

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        """Called when the pod has finished (the triggerer's event): classify and close the attempt."""
        from airflow.sdk.exceptions import TaskDeferred

        attempt = begin_attempt(context, LaunchPlan.from_dict(self.plan), self.log.info)  # same record
        self._pod_operator = pod = self.pod_operator(attempt.job, context)
        try:
            pod.trigger_reentry(context, event)
        except TaskDeferred:
            raise
        except Exception as exc:
            return self._finish(attempt, self._classify(pod, event, exc), event.get("name"))
        return self._finish(attempt, Classification(Outcome.SUCCEEDED, "pod succeeded", 0), event.get("name"))

    def on_kill(self) -> None:
        if self._pod_operator is not None:
            self._pod_operator.on_kill()  # deletes the pod with its grace period

    def _classify(self, pod: TrainingPodOperator, where: Mapping[str, Any], exc: Exception) -> Classification:
        self.log.warning("Training pod %s did not succeed: %s", where.get("name"), exc)
        classification = classify_pod(pod.final_manifest(where), pod.base_container_name)
        if classification.outcome == Outcome.SUCCEEDED:
            return Classification(Outcome.FAILED, f"pod succeeded but the task failed: {exc}")
        return classification

    def _finish(self, attempt: Attempt, classification: Classification, pod_name: str | None) -> Any:
        return end_attempt(attempt, classification, self.log.info, pod_name=pod_name)
