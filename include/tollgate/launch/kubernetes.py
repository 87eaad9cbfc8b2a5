"""The training job rendered as a spot pod, launched by a deferrable KubernetesPodOperator.

Spot placement covers the common capacity labels: Karpenter ``karpenter.sh/capacity-type: spot``, EKS
managed node groups ``eks.amazonaws.com/capacityType: SPOT`` and GKE ``cloud.google.com/gke-spot: "true"``
(required node affinity with one term per label, so any of them matches), with tolerations for the taints
clusters commonly put on such nodes. An on-demand attempt (the last one, when the preemption budget is
nearly spent) keeps off all of them. Failed pods are kept for debugging; each try gets a fresh pod.

Before a try creates its pod, :func:`remove_earlier_pods` deletes every unfinished pod of the same training
run (label ``tollgate.io/training-run-id``) and waits until the API server no longer lists them, so two
trainers never write one checkpoint folder. A pod that does not go away (its node unreachable) stops the
try instead; the trainer's attempt fencing (``training/checkpoints.py``) is the second line behind this.

This module imports the Kubernetes client (seconds of import time): DAG files never import it; the DAG's
``operators.SpotTrainingPodOperator`` loads it when the task runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from tollgate.config import K8S_CONN_ID
from tollgate.launch.job import MLFLOW_CREDENTIAL_KEYS, Resources, TrainingJob, sanitize_label_value

# (node label, value on spot nodes); an on-demand attempt requires each to be absent or different.
SPOT_NODE_LABELS: tuple[tuple[str, str], ...] = (
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("cloud.google.com/gke-spot", "true"),
)
GPU_RESOURCE = "nvidia.com/gpu"
CONTAINER_NAME = "trainer"
TRAINING_RUN_LABEL = "tollgate.io/training-run-id"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})  # no container runs: cannot write any more
# Seconds to wait for deleted pods beyond their termination grace (kubelet and API server round trips).
POD_GONE_MARGIN_SECONDS = 30
POD_GONE_POLL_SECONDS = 1.0
# docker/k8s/training-scheduling.yaml creates it (with the PodDisruptionBudget that selects the pod labels).
PRIORITY_CLASS = "tollgate-training"


def spot_affinity(on_demand: bool = False) -> k8s.V1Affinity:
    """Required node affinity: any spot label (terms are ORed), or none of them for on-demand."""
    if on_demand:
        terms = [
            k8s.V1NodeSelectorTerm(
                match_expressions=[
                    k8s.V1NodeSelectorRequirement(key=key, operator="NotIn", values=[value])
                    for key, value in SPOT_NODE_LABELS
                ]
            )
        ]
    else:
        terms = [
            k8s.V1NodeSelectorTerm(
                match_expressions=[k8s.V1NodeSelectorRequirement(key=key, operator="In", values=[value])]
            )
            for key, value in SPOT_NODE_LABELS
        ]
    return k8s.V1Affinity(
        node_affinity=k8s.V1NodeAffinity(
            required_during_scheduling_ignored_during_execution=k8s.V1NodeSelector(node_selector_terms=terms)
        )
    )


def tolerations(on_demand: bool = False, gpu: int = 0) -> list[k8s.V1Toleration]:
    result = []
    if not on_demand:
        result += [
            k8s.V1Toleration(key=key, operator="Equal", value=value, effect="NoSchedule")
            for key, value in SPOT_NODE_LABELS
        ]
    if gpu:
        result.append(k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"))
    return result


def container_resources(resources: Resources) -> k8s.V1ResourceRequirements:
    """Requests = limits (Guaranteed QoS: the trainer is not the first thing evicted under pressure)."""
    amounts: dict[str, str] = {"cpu": resources.cpu, "memory": resources.memory}
    if resources.gpu:
        amounts[GPU_RESOURCE] = str(resources.gpu)
    return k8s.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))


def pod_labels(job: TrainingJob, context: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Labels tying the pod to the training run and the Airflow task try, in label syntax."""
    labels = {
        "app.kubernetes.io/name": "tollgate-trainer",
        "app.kubernetes.io/part-of": "tollgate",
        "app.kubernetes.io/managed-by": "airflow",
        TRAINING_RUN_LABEL: job.training_run_id,
        "tollgate.io/capacity": job.capacity,
    }
    if context:
        ti = context["ti"]
        labels.update(
            {
                "tollgate.io/dag-id": ti.dag_id,
                "tollgate.io/run-id": ti.run_id,
                "tollgate.io/task-id": ti.task_id,
                "tollgate.io/try-number": str(ti.try_number),
            }
        )
    return {key: sanitize_label_value(value) for key, value in labels.items()}


def env_vars(job: TrainingJob) -> list[k8s.V1EnvVar]:
    """The trainer's environment. MLflow's account comes from the Secret ``job.mlflow_credentials_secret``
    through secretKeyRef (MLflow's basic auth is on in production); a value for it in ``job.env`` is never
    written into the pod spec."""
    env = {name: value for name, value in job.env.items() if name not in MLFLOW_CREDENTIAL_KEYS}
    if job.mlflow_uri:
        env["MLFLOW_TRACKING_URI"] = job.mlflow_uri
    env["PYTHONUNBUFFERED"] = "1"
    plain = [k8s.V1EnvVar(name=name, value=str(value)) for name, value in sorted(env.items())]
    if not (job.mlflow_uri and job.mlflow_credentials_secret):
        return plain
    from_secret = [
        k8s.V1EnvVar(
            name=name,
            value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name=job.mlflow_credentials_secret, key=key)
            ),
        )
        for name, key in MLFLOW_CREDENTIAL_KEYS.items()
    ]
    return plain + from_secret


class EarlierPodsStillRunning(RuntimeError):
    """Pods of an earlier try were deleted but are still there: starting another would add a second writer."""


def remove_earlier_pods(
    client: Any,
    job: TrainingJob,
    *,
    log: Callable[[str], Any] = print,
    wait_seconds: float | None = None,
    poll_seconds: float = POD_GONE_POLL_SECONDS,
) -> list[str]:
    """Delete the unfinished pods of ``job``'s training run and return once the API server has none of them.

    ``client`` is a ``CoreV1Api``. Pods that finished (Succeeded/Failed) stay for debugging. A deleted pod
    gets its own termination grace (its trainer saves a checkpoint on SIGTERM); one still listed after
    ``wait_seconds`` (default: the pod grace + a margin) raises :class:`EarlierPodsStillRunning`.
    """
    selector = f"{TRAINING_RUN_LABEL}={sanitize_label_value(job.training_run_id)}"

    def listed() -> list[k8s.V1Pod]:
        return list(client.list_namespaced_pod(namespace=job.namespace, label_selector=selector).items)

    live = [p for p in listed() if (p.status.phase if p.status else None) not in FINISHED_PHASES]
    names = sorted(p.metadata.name for p in live)
    for name in names:
        log(f"Deleting pod {job.namespace}/{name} of an earlier try of training run {job.training_run_id}")
        try:
            client.delete_namespaced_pod(name=name, namespace=job.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
    wait = job.pod_grace_seconds + POD_GONE_MARGIN_SECONDS if wait_seconds is None else wait_seconds
    deadline = time.monotonic() + wait
    while names:
        remaining = sorted({p.metadata.name for p in listed()} & set(names))
        if not remaining:
            log(f"Earlier pods gone: {', '.join(names)}")
            break
        if time.monotonic() >= deadline:
            raise EarlierPodsStillRunning(
                f"pod(s) {', '.join(remaining)} of training run {job.training_run_id} in namespace "
                f"{job.namespace} were deleted but are still there after {wait:g} s (node unreachable?). "
                "Not starting a second trainer on the same checkpoints; the task retries. Once you know the "
                "node is gone, `kubectl delete pod --force --grace-period=0` removes them."
            )
        time.sleep(poll_seconds)
    return names


def pod_manifest(pod: k8s.V1Pod) -> dict[str, Any]:
    """The camelCase dict the API server would get (or return)."""
    return ApiClient().sanitize_for_serialization(pod)


class TrainingPodOperator(KubernetesPodOperator):
    """The provider's KubernetesPodOperator with the training job rendered onto it (deferrable, failed pods
    kept, a fresh pod per try). Created at run time by ``operators.SpotTrainingPodOperator``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("kubernetes_conn_id", K8S_CONN_ID)
        kwargs.setdefault("name", "tollgate-train")
        kwargs.setdefault("deferrable", True)
        kwargs.setdefault("on_finish_action", "delete_succeeded_pod")  # failed pods stay for debugging
        kwargs.setdefault("get_logs", True)
        kwargs.setdefault("log_events_on_failure", True)
        kwargs.setdefault("base_container_name", CONTAINER_NAME)
        kwargs.setdefault("startup_timeout_seconds", 900)  # new spot capacity can take minutes
        # Every try gets a fresh pod; a failed pod of an earlier try is kept for debugging and must never be
        # reattached to (deferral keeps watching the pod of the current try through the triggerer anyway).
        kwargs.setdefault("durable", False)
        kwargs.setdefault("priority_class_name", PRIORITY_CLASS)
        super().__init__(**kwargs)

    def configure(self, job: TrainingJob, context: Mapping[str, Any] | None = None) -> None:
        """Render ``job`` onto this operator's pod fields."""
        self.image = job.image
        self.cmds = list(job.command)
        self.arguments = job.argv()
        self.env_vars = env_vars(job)
        self.namespace = job.namespace
        self.service_account_name = job.service_account
        self.container_resources = container_resources(job.resources)
        self.affinity = spot_affinity(job.on_demand)
        self.tolerations = tolerations(job.on_demand, job.resources.gpu)
        self.termination_grace_period = job.pod_grace_seconds
        self.labels = {**(self.labels or {}), **pod_labels(job, context)}
        self.annotations = {
            **(self.annotations or {}),
            "tollgate.io/checkpoint-uri": job.checkpoint_uri,
            "tollgate.io/output-uri": job.output_uri,
        }

    def build_job_pod(self, job: TrainingJob, context: Mapping[str, Any] | None = None) -> k8s.V1Pod:
        """The pod for ``job`` built by the provider's own code, without any cluster (dry run)."""
        self.configure(job, context)
        return self.build_pod_request_obj(context, dry_run=True)  # type: ignore[arg-type]

    def final_manifest(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """The pod as the API server has it now; None if it is gone (deleted with its node)."""
        try:
            pod = self.hook.get_pod(event["name"], event["namespace"])
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return pod_manifest(pod) if pod is not None else None
