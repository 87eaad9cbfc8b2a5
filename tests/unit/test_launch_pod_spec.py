"""The spot training pod, built offline by the KubernetesPodOperator's own code.

No Kubernetes cluster exists here: pods are built with ``build_pod_request_obj(dry_run=True)`` and checked as
the camelCase manifest the API server would receive. The one test of the re-entry path replaces the
Kubernetes API (``hook.get_pod`` and the provider's pod watching) with a stand-in; nothing else is faked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import models as k8s

from tollgate.launch import ledger as ledgers
from tollgate.launch.attempts import TrainingPreempted
from tollgate.launch.budget import Budgets
from tollgate.launch.classify import Classification, Outcome
from tollgate.launch.job import Resources, TrainingJob
from tollgate.launch.kubernetes import SPOT_NODE_LABELS, TrainingPodOperator, pod_manifest
from tollgate.launch.operators import SpotTrainingPodOperator
from tollgate.launch.plan import LaunchPlan

pytestmark = pytest.mark.unit

RUN_ID = "manual__2026-11-27T17:53:33.530998+00:00"


@dataclass
class FakeTI:
    """The few task-instance fields the operator reads (no Airflow run exists in a unit test)."""

    try_number: int = 1
    max_tries: int = 10
    dag_id: str = "train_model"
    run_id: str = RUN_ID
    task_id: str = "train_kubernetes"
    map_index: int = -1
    task: object = None


def _context(try_number: int = 1) -> dict:
    ti = FakeTI(try_number=try_number, task=SimpleNamespace(retries=10))
    return {"ti": ti, "run_id": RUN_ID, "dag": SimpleNamespace(dag_id="train_model")}


def _job(tmp_path, gpu: int = 0, on_demand: bool = False) -> TrainingJob:
    return TrainingJob(
        training_run_id="train-model-manual-2026-11-27t17-53-33-abc",
        image="ghcr.io/tollgate-mlops/tollgate-training:0.1.0",
        checkpoint_uri=str(tmp_path / "checkpoints"),
        output_uri=str(tmp_path / "models"),
        mlflow_uri="http://mlflow.tollgate:5000",
        trainer_args={"data-rev": "abc123", "epochs": 3},
        resources=Resources(cpu="4", memory="8Gi", gpu=gpu),
        grace_seconds=30,
        service_account="tollgate-training",
        namespace="ml-training",
        on_demand=on_demand,
    )


def _manifest(tmp_path, **job_changes) -> dict:
    job = _job(tmp_path, **job_changes)
    op = TrainingPodOperator(task_id="train_kubernetes")
    return pod_manifest(op.build_job_pod(job, _context()))


def test_operator_defaults_defer_and_keep_failed_pods(tmp_path):
    job = _job(tmp_path)
    op = SpotTrainingPodOperator(task_id="train_kubernetes", plan={}).pod_operator(job, _context())
    assert isinstance(op, KubernetesPodOperator)
    assert op.deferrable is True
    assert op.on_finish_action.value == "delete_succeeded_pod"
    assert op.durable is False  # a retry never reattaches to the failed pod of an earlier try


def test_spot_pod_manifest(tmp_path):
    pod = _manifest(tmp_path)
    spec, meta = pod["spec"], pod["metadata"]
    assert meta["namespace"] == "ml-training"
    assert spec["serviceAccountName"] == "tollgate-training"
    assert spec["terminationGracePeriodSeconds"] == 40  # checkpoint grace 30 s + margin
    assert spec["restartPolicy"] == "Never"

    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert [t["matchExpressions"] for t in terms] == [
        [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}],
        [{"key": "eks.amazonaws.com/capacityType", "operator": "In", "values": ["SPOT"]}],
        [{"key": "cloud.google.com/gke-spot", "operator": "In", "values": ["true"]}],
    ]  # one term per label: any spot flavour matches
    tolerated = {(t["key"], t.get("value"), t["effect"]) for t in spec["tolerations"]}
    assert tolerated == {(key, value, "NoSchedule") for key, value in SPOT_NODE_LABELS}

    (container,) = spec["containers"]
    assert container["name"] == "trainer"
    assert container["image"] == "ghcr.io/tollgate-mlops/tollgate-training:0.1.0"
    assert container["command"] == ["python", "-m", "tollgate.training"]
    args = container["args"]
    assert args[args.index("--checkpoint-uri") + 1] == str(tmp_path / "checkpoints")
    assert args[args.index("--grace-seconds") + 1] == "30"
    assert args[args.index("--data-rev") + 1] == "abc123"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.tollgate:5000"
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "8Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    }
    assert "nvidia.com/gpu" not in str(spec)


def test_labels_tie_the_pod_to_the_airflow_try(tmp_path):
    labels = _manifest(tmp_path)["metadata"]["labels"]
    assert labels["tollgate.io/training-run-id"] == "train-model-manual-2026-11-27t17-53-33-abc"
    assert labels["tollgate.io/dag-id"] == "train_model"
    assert labels["tollgate.io/task-id"] == "train_kubernetes"
    assert labels["tollgate.io/try-number"] == "1"
    assert labels["tollgate.io/run-id"] == "manual__2026-11-27T17-53-33.530998-00-00"
    assert labels["tollgate.io/capacity"] == "spot"
    assert labels["app.kubernetes.io/part-of"] == "tollgate"
    assert labels["kubernetes_pod_operator"] == "True"  # the provider's own labels are kept too
    label_value = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
    bad = {k: v for k, v in labels.items() if len(v) > 63 or not re.match(label_value, v)}
    assert not bad, f"labels not in Kubernetes label syntax: {bad}"


def test_gpu_requests_and_limits_with_toleration(tmp_path):
    spec = _manifest(tmp_path, gpu=2)["spec"]
    resources = spec["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == "2"
    assert resources["limits"]["nvidia.com/gpu"] == "2"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_on_demand_attempt_keeps_off_spot_nodes(tmp_path):
    pod = _manifest(tmp_path, on_demand=True)
    spec = pod["spec"]
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": key, "operator": "NotIn", "values": [value]} for key, value in SPOT_NODE_LABELS
    ]
    assert not spec.get("tolerations")
    assert pod["metadata"]["labels"]["tollgate.io/capacity"] == "on-demand"


# ---- re-entry after the pod finished: classification against a stand-in Kubernetes API ------------
class FakeHook:
    def __init__(self, pod: k8s.V1Pod | None):
        self.pod = pod

    def get_pod(self, name, namespace):
        from kubernetes.client.exceptions import ApiException

        if self.pod is None:
            raise ApiException(status=404, reason="Not Found")
        return self.pod


def _evicted_pod() -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="tollgate-train-x", namespace="ml-training"),
        status=k8s.V1PodStatus(phase="Failed", reason="Evicted", message="The node was low on resource"),
    )


def _oom_pod() -> k8s.V1Pod:
    terminated = k8s.V1ContainerStateTerminated(exit_code=137, reason="OOMKilled")
    status = k8s.V1ContainerStatus(
        name="trainer", image="x", image_id="x", ready=False, restart_count=0,
        state=k8s.V1ContainerState(terminated=terminated),
    )  # fmt: skip
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="tollgate-train-y", namespace="ml-training"),
        status=k8s.V1PodStatus(phase="Failed", container_statuses=[status]),
    )


@pytest.mark.parametrize(
    ("remote_pod", "raises", "outcome"),
    [
        (_evicted_pod(), TrainingPreempted, "preempted"),
        (None, TrainingPreempted, "preempted"),  # pod gone with its node
        (_oom_pod(), AirflowFailException, "failed"),  # failure budget 0 below: fail at once
    ],
)
def test_reentry_classifies_the_finished_pod(tmp_path, monkeypatch, remote_pod, raises, outcome):
    job = _job(tmp_path)
    plan = LaunchPlan(job=job, backend="kubernetes", budgets=Budgets(preemptions=5, failures=0))
    op = SpotTrainingPodOperator(task_id="train_kubernetes", plan=plan.to_dict())

    def provider_reentry(self, context, event):  # what the provider does for a failed pod
        raise AirflowException(f"Pod {event['name']} returned a failure.")

    monkeypatch.setattr(KubernetesPodOperator, "trigger_reentry", provider_reentry)
    monkeypatch.setattr(TrainingPodOperator, "hook", FakeHook(remote_pod))
    event = {"status": "failed", "name": "tollgate-train-x", "namespace": "ml-training", "message": "failed"}
    with pytest.raises(raises):
        op.trigger_reentry(_context(), event)
    (record,) = ledgers.load(job.checkpoint_uri, job.training_run_id).attempts
    assert record.outcome == outcome
    assert record.backend == "kubernetes"
    assert record.pod_name == "tollgate-train-x"


def test_reentry_after_success_closes_the_attempt(tmp_path, monkeypatch):
    job = _job(tmp_path)
    op = SpotTrainingPodOperator(
        task_id="train_kubernetes", plan=LaunchPlan(job=job, backend="kubernetes").to_dict()
    )
    monkeypatch.setattr(KubernetesPodOperator, "trigger_reentry", lambda self, context, event: None)
    summary = op.trigger_reentry(_context(), {"status": "success", "name": "p", "namespace": "ml-training"})
    assert summary["attempts"] == 1 and summary["preemptions"] == 0
    assert ledgers.load(job.checkpoint_uri, job.training_run_id).attempts[0].outcome == "succeeded"


def test_rbac_manifest_matches_the_defaults():
    """docker/k8s/training-rbac.yaml creates the namespace and service account the pod spec names."""
    import yaml

    from tollgate.config import REPO_ROOT, default_for

    docs = list(yaml.safe_load_all((REPO_ROOT / "docker" / "k8s" / "training-rbac.yaml").read_text()))
    by_kind = {doc["kind"]: doc for doc in docs}
    namespace = default_for("tollgate_k8s_namespace")
    assert by_kind["Namespace"]["metadata"]["name"] == namespace
    assert by_kind["ServiceAccount"]["metadata"] == {
        **by_kind["ServiceAccount"]["metadata"],
        "name": default_for("tollgate_training_service_account"),
        "namespace": namespace,
    }
    pod_rule = next(rule for rule in by_kind["Role"]["rules"] if rule["resources"] == ["pods"])
    assert {"create", "get", "list", "watch", "patch", "delete"} <= set(pod_rule["verbs"])


def test_execute_defers_and_the_last_attempt_goes_on_demand(tmp_path, monkeypatch):
    """Two preemptions already spent a budget of 2: try 3 asks for on-demand capacity. The provider's pod
    creation (which needs a cluster) is replaced by a dry-run build followed by the deferral it would do."""
    from datetime import timedelta

    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
    from airflow.sdk.exceptions import TaskDeferred

    job = _job(tmp_path)
    led = ledgers.load(job.checkpoint_uri, job.training_run_id)
    for try_number in (1, 2):
        led.begin(try_number=try_number, series=1, backend="kubernetes", capacity="spot", instance_type="x")
        led.find(try_number).finish(Classification(Outcome.PREEMPTED, "pod Evicted"))
    ledgers.save(job.checkpoint_uri, led)
    built: list[dict] = []

    def create_pod_and_defer(self, context):
        built.append(pod_manifest(self.build_pod_request_obj(context, dry_run=True)))
        raise TaskDeferred(trigger=TimeDeltaTrigger(timedelta(seconds=1)), method_name="trigger_reentry")

    monkeypatch.setattr(KubernetesPodOperator, "execute", create_pod_and_defer)
    plan = LaunchPlan(job=job, backend="kubernetes", budgets=Budgets(preemptions=2, failures=1))
    op = SpotTrainingPodOperator(task_id="train_kubernetes", plan=plan.to_dict())
    with pytest.raises(TaskDeferred):
        op.execute(_context(try_number=3))

    (pod,) = built
    assert pod["metadata"]["labels"]["tollgate.io/capacity"] == "on-demand"
    assert pod["metadata"]["labels"]["tollgate.io/try-number"] == "3"
    assert not pod["spec"].get("tolerations")
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert (env["TOLLGATE_ATTEMPT"], env["TOLLGATE_PREEMPTIONS"], env["TOLLGATE_AIRFLOW_TRY_NUMBER"]) == (
        "3",
        "2",
        "3",
    )
    third = ledgers.load(job.checkpoint_uri, job.training_run_id).find(3)
    assert (third.outcome, third.capacity) == ("running", "on-demand")  # closed by trigger_reentry later
