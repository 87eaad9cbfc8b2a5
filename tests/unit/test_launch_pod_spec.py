"""The spot training pod, built offline by the KubernetesPodOperator's own code.

No Kubernetes cluster exists here: pods are built with ``build_pod_request_obj(dry_run=True)`` and checked as
the camelCase manifest the API server would receive. The tests of execute / re-entry run the provider's own
KubernetesPodOperator code; only its Kubernetes hook is replaced, by one that answers from an in-memory
stand-in of the API server (``FakeKubernetesApi``), because no API server can run here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

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
    start_date: object = None
    xcoms: dict = field(default_factory=dict)

    def xcom_push(self, key: str, value: object) -> None:  # the provider records the pod name this way
        self.xcoms[key] = value


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
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.tollgate:5000"
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "8Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    }
    assert "nvidia.com/gpu" not in str(spec)


def test_mlflow_credentials_come_from_a_secret_never_from_the_spec(tmp_path):
    """MLflow's basic auth is on in production: the trainer's account is read from a Secret (secretKeyRef);
    a password that reached the job's environment (e.g. the worker's own) is not written into the pod."""
    job = replace(
        _job(tmp_path),
        env={"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "worker-secret", "A": "1"},
    )
    pod = pod_manifest(TrainingPodOperator(task_id="train_kubernetes").build_job_pod(job, _context()))
    (container,) = pod["spec"]["containers"]
    by_name = {e["name"]: e for e in container["env"]}
    assert by_name["MLFLOW_TRACKING_USERNAME"] == {
        "name": "MLFLOW_TRACKING_USERNAME",
        "valueFrom": {"secretKeyRef": {"name": "tollgate-mlflow-credentials", "key": "username"}},
    }
    assert by_name["MLFLOW_TRACKING_PASSWORD"] == {
        "name": "MLFLOW_TRACKING_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "tollgate-mlflow-credentials", "key": "password"}},
    }
    assert by_name["A"]["value"] == "1"
    assert "worker-secret" not in str(pod)

    other = replace(job, mlflow_credentials_secret="team-a-mlflow")
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in pod_manifest(TrainingPodOperator(task_id="t").build_job_pod(other, _context()))["spec"][
            "containers"
        ][0]["env"]
        if "valueFrom" in e
    }
    assert refs == {"MLFLOW_TRACKING_USERNAME": "team-a-mlflow", "MLFLOW_TRACKING_PASSWORD": "team-a-mlflow"}


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


# ---- the provider's own execute / trigger_reentry against a stand-in Kubernetes API -------------------
class FakeKubernetesApi:
    """Stands in for the Kubernetes API server, which does not exist here: the ``CoreV1Api`` calls that the
    provider's KubernetesPodOperator and Tollgate make, over pods kept in memory.

    A deleted pod stays listed, terminating, for ``terminating_lists`` more list calls (its trainer is still
    saving a checkpoint); ``None`` keeps it forever (a node that lost contact). ``calls`` records the order.
    """

    def __init__(self, pods: list[k8s.V1Pod] = (), terminating_lists: int | None = 1):
        self.api_client = ApiClient()
        self.pods = {p.metadata.name: p for p in pods}
        self.terminating_lists = terminating_lists
        self.terminating: dict[str, int | None] = {}
        self.calls: list[tuple[str, str]] = []

    def _get(self, name: str) -> k8s.V1Pod:
        if name not in self.pods:
            raise ApiException(status=404, reason="Not Found")
        return self.pods[name]

    def list_namespaced_pod(self, namespace: str, label_selector: str = "", **_: object) -> k8s.V1PodList:
        self.calls.append(("list", label_selector))
        for name, left in list(self.terminating.items()):
            if left is not None and left <= 0:
                del self.pods[name], self.terminating[name]
            elif left is not None:
                self.terminating[name] = left - 1
        wanted = [term for term in label_selector.split(",") if term]
        return k8s.V1PodList(
            items=[
                p for p in self.pods.values()
                if p.metadata.namespace == namespace and all(_matches(p, term) for term in wanted)
            ]
        )  # fmt: skip

    def delete_namespaced_pod(self, name: str, namespace: str, **_: object) -> None:
        self.calls.append(("delete", name))
        self._get(name).metadata.deletion_timestamp = "2026-11-28T00:00:00Z"
        self.terminating.setdefault(name, self.terminating_lists)

    def create_namespaced_pod(self, namespace: str, body: dict, **_: object) -> k8s.V1Pod:
        self.calls.append(("create", body["metadata"]["name"]))
        self.terminating_at_create = sorted(self.terminating)  # deleted pods the API still listed then
        pod = self.api_client._ApiClient__deserialize(body, "V1Pod")
        pod.status = k8s.V1PodStatus(phase="Pending")
        self.pods[pod.metadata.name] = pod
        return pod

    def read_namespaced_pod(self, name: str, namespace: str, **_: object) -> k8s.V1Pod:
        return self._get(name)

    def patch_namespaced_pod(self, name: str, namespace: str, body: dict, **_: object) -> k8s.V1Pod:
        pod = self._get(name)
        pod.metadata.labels = {**(pod.metadata.labels or {}), **body["metadata"]["labels"]}
        return pod

    def read_namespaced_pod_log(self, **_: object) -> list[bytes]:
        return [b"TOLLGATE_PROGRESS step=1 epoch=1\n"]

    def list_namespaced_event(self, **_: object) -> k8s.CoreV1EventList:
        return k8s.CoreV1EventList(items=[])


def _matches(pod: k8s.V1Pod, term: str) -> bool:
    labels = pod.metadata.labels or {}
    if term.startswith("!"):
        return term[1:] not in labels
    if "!=" in term:
        key, value = term.split("!=", 1)
        return labels.get(key) != value
    key, value = term.split("=", 1)
    return labels.get(key) == value


class FakeHook:
    """The provider's KubernetesHook, answering from the stand-in API (the only thing replaced)."""

    is_in_cluster = False

    def __init__(self, api: FakeKubernetesApi):
        self.core_v1_client = api

    def get_pod(self, name: str, namespace: str) -> k8s.V1Pod:
        return self.core_v1_client.read_namespaced_pod(name, namespace)

    def get_namespace(self) -> str | None:
        return None


@pytest.fixture
def kube(monkeypatch) -> FakeKubernetesApi:
    api = FakeKubernetesApi()
    monkeypatch.setattr(TrainingPodOperator, "hook", FakeHook(api))
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", '{"conn_type": "kubernetes"}')
    return api


def _pod(name: str, phase: str | None, run_id: str = "train-model-manual-2026-11-27t17-53-33-abc", **status):
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name=name, namespace="ml-training", labels={"tollgate.io/training-run-id": run_id}
        ),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="trainer")]),
        status=k8s.V1PodStatus(phase=phase, **status),
    )


def _oom_pod() -> k8s.V1Pod:
    terminated = k8s.V1ContainerStateTerminated(exit_code=137, reason="OOMKilled")
    status = k8s.V1ContainerStatus(
        name="trainer", image="x", image_id="x", ready=False, restart_count=0,
        state=k8s.V1ContainerState(terminated=terminated),
    )  # fmt: skip
    return _pod("tollgate-train-x", "Failed", container_statuses=[status])


@pytest.mark.parametrize(
    ("remote_pod", "raises", "outcome"),
    [
        (_pod("tollgate-train-x", "Failed", reason="Evicted", message="The node was low on resource"),
         TrainingPreempted, "preempted"),
        (None, TrainingPreempted, "preempted"),  # pod gone with its node
        (_oom_pod(), AirflowFailException, "failed"),  # failure budget 0 below: fail at once
    ],
)  # fmt: skip
def test_reentry_classifies_the_finished_pod(tmp_path, kube, remote_pod, raises, outcome):
    """The provider's real trigger_reentry reads the pod, its logs and events, then raises for the failed
    pod; the attempt is classified from the pod as the API returns it."""
    if remote_pod is not None:
        kube.pods[remote_pod.metadata.name] = remote_pod
    job = _job(tmp_path)
    plan = LaunchPlan(job=job, backend="kubernetes", budgets=Budgets(preemptions=5, failures=0))
    op = SpotTrainingPodOperator(task_id="train_kubernetes", plan=plan.to_dict())
    event = {"status": "failed", "name": "tollgate-train-x", "namespace": "ml-training", "message": "failed"}
    with pytest.raises(raises):
        op.trigger_reentry(_context(), event)
    (record,) = ledgers.load(job.checkpoint_uri, job.training_run_id).attempts
    assert record.outcome == outcome
    assert record.backend == "kubernetes"
    assert record.pod_name == "tollgate-train-x"
    if remote_pod is not None:  # the failed pod is kept for debugging, marked so no retry reattaches to it
        assert kube.pods["tollgate-train-x"].metadata.labels["already_checked"] == "True"


def test_reentry_after_success_closes_the_attempt_and_deletes_the_pod(tmp_path, kube):
    terminated = k8s.V1ContainerStateTerminated(exit_code=0, reason="Completed")
    status = k8s.V1ContainerStatus(
        name="trainer", image="x", image_id="x", ready=False, restart_count=0,
        state=k8s.V1ContainerState(terminated=terminated),
    )  # fmt: skip
    kube.pods["p"] = _pod("p", "Succeeded", container_statuses=[status])
    job = _job(tmp_path)
    op = SpotTrainingPodOperator(
        task_id="train_kubernetes", plan=LaunchPlan(job=job, backend="kubernetes").to_dict()
    )
    summary = op.trigger_reentry(_context(), {"status": "success", "name": "p", "namespace": "ml-training"})
    assert summary["attempts"] == 1 and summary["preemptions"] == 0
    assert ledgers.load(job.checkpoint_uri, job.training_run_id).attempts[0].outcome == "succeeded"
    assert ("delete", "p") in kube.calls  # succeeded pods are cleaned up


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


def test_execute_deletes_earlier_pods_waits_until_gone_then_goes_on_demand(tmp_path, kube):
    """Two preemptions already spent a budget of 2: try 3 asks for on-demand capacity. Before it creates its
    pod, the still-running pod of try 2 (same training run) is deleted and the new pod is created only once
    the API no longer lists it; the failed pod of try 1 stays for debugging, another run's pod is untouched.
    The provider's own execute creates the pod and defers."""
    from airflow.sdk.exceptions import TaskDeferred

    job = _job(tmp_path)
    led = ledgers.load(job.checkpoint_uri, job.training_run_id)
    for try_number in (1, 2):
        led.begin(try_number=try_number, series=1, backend="kubernetes", capacity="spot", instance_type="x")
        led.find(try_number).finish(Classification(Outcome.PREEMPTED, "pod Evicted"))
    ledgers.save(job.checkpoint_uri, led)
    for pod in (_pod("try-1", "Failed", reason="Evicted"), _pod("try-2", "Running"),
                _pod("other-run", "Running", run_id="another-run")):  # fmt: skip
        kube.pods[pod.metadata.name] = pod

    plan = LaunchPlan(job=job, backend="kubernetes", budgets=Budgets(preemptions=2, failures=1))
    op = SpotTrainingPodOperator(task_id="train_kubernetes", plan=plan.to_dict())
    with pytest.raises(TaskDeferred):
        op.execute(_context(try_number=3))

    verbs = [verb for verb, _ in kube.calls]
    assert ("delete", "try-2") in kube.calls and verbs.count("delete") == 1
    created = [name for verb, name in kube.calls if verb == "create"]
    assert len(created) == 1
    assert kube.terminating_at_create == []  # created only once the old pod was gone
    assert "try-2" not in kube.pods and {"try-1", "other-run"} <= set(kube.pods)

    pod = pod_manifest(kube.pods[created[0]])
    assert pod["metadata"]["labels"]["tollgate.io/capacity"] == "on-demand"
    assert pod["metadata"]["labels"]["tollgate.io/try-number"] == "3"
    assert not pod["spec"].get("tolerations")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert (env["TOLLGATE_ATTEMPT"], env["TOLLGATE_PREEMPTIONS"], env["TOLLGATE_AIRFLOW_TRY_NUMBER"]) == (
        "3",
        "2",
        "3",
    )
    third = ledgers.load(job.checkpoint_uri, job.training_run_id).find(3)
    assert (third.outcome, third.capacity) == ("running", "on-demand")  # closed by trigger_reentry later


def test_an_earlier_pod_that_does_not_go_away_blocks_the_new_one(tmp_path, kube):
    """A pod on a node that lost contact stays listed after deletion: no second trainer is started, the
    attempt fails with the reason (and is retried within the failure budget)."""
    kube.terminating_lists = None
    kube.pods["stuck"] = _pod("stuck", "Running")
    job = _job(tmp_path)
    plan = LaunchPlan(job=job, backend="kubernetes", budgets=Budgets(preemptions=2, failures=1))
    op = SpotTrainingPodOperator(
        task_id="train_kubernetes", plan=plan.to_dict(), earlier_pods_timeout_seconds=1
    )
    with pytest.raises(AirflowException):
        op.execute(_context())
    assert not [verb for verb, _ in kube.calls if verb == "create"]
    (record,) = ledgers.load(job.checkpoint_uri, job.training_run_id).attempts
    assert record.outcome == "failed"
    assert "pod(s) stuck of training run" in record.reason and "still there after" in record.reason
