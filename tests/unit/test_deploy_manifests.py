"""Images and charts, validated offline (no Docker engine, no cluster, no helm binary here).

Built-in Kubernetes kinds are checked with ``kubernetes-validate`` (the API's OpenAPI schemas, strict);
the Helm values against Tollgate's typed model of the official chart's values; the Karpenter NodePool
against a field-checked model of its CRD; the Dockerfiles with BuildKit's parser. Each checker is also
shown to refuse a broken input, so a green run means something.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from tollgate.config import ALIAS_POOL, REPO_ROOT, SPOT_POOL, VARIABLE_DEFAULTS
from tollgate.packaging import dockerfiles, image_locks
from tollgate.packaging.helm_values import AIRFLOW_VERSION, load_values
from tollgate.packaging.karpenter import NodePool

pytestmark = pytest.mark.unit

K8S_VERSION = "1.33.0"
DOCKER = REPO_ROOT / "docker"
MANIFESTS = sorted((DOCKER / "k8s").glob("*.yaml"))
HELM = DOCKER / "helm"


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _builtin(doc: dict) -> bool:
    return "." not in doc["apiVersion"].split("/")[0] or doc["apiVersion"].split("/")[0].endswith(".k8s.io")


# ---- Kubernetes manifests -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_builtin_kinds_validate_strictly(path):
    docs = [doc for doc in _docs(path) if _builtin(doc)]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert docs or path.name.startswith("karpenter")


def test_the_validator_refuses_a_misspelt_field():
    doc = _docs(DOCKER / "k8s" / "training-scheduling.yaml")[1]
    doc["spec"]["maxUnavailabel"] = 0
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_priority_class_and_disruption_budget_match_the_training_pod(tmp_path):
    """The pod names the PriorityClass the manifest creates, and the PDB selects the pod."""
    from tollgate.launch.job import Resources, TrainingJob
    from tollgate.launch.kubernetes import TrainingPodOperator, pod_manifest

    job = TrainingJob(
        training_run_id="train-model-x",
        image="ghcr.io/tollgate-mlops/tollgate-training:0.1.0",
        checkpoint_uri=str(tmp_path / "c"),
        output_uri=str(tmp_path / "o"),
        mlflow_uri="http://mlflow:5000",
        trainer_args={},
        resources=Resources(cpu="4", memory="8Gi", gpu=1),
        grace_seconds=120,
        service_account="tollgate-training",
        namespace="tollgate",
    )
    from types import SimpleNamespace

    ti = SimpleNamespace(
        try_number=1,
        max_tries=3,
        dag_id="d",
        run_id="r",
        task_id="t",
        map_index=-1,
        task=SimpleNamespace(retries=2),
    )
    pod = pod_manifest(
        TrainingPodOperator(task_id="t").build_job_pod(
            job, {"ti": ti, "run_id": "r", "dag": SimpleNamespace(dag_id="d")}
        )
    )
    by_kind = {doc["kind"]: doc for doc in _docs(DOCKER / "k8s" / "training-scheduling.yaml")}
    assert pod["spec"]["priorityClassName"] == by_kind["PriorityClass"]["metadata"]["name"]
    pdb = by_kind["PodDisruptionBudget"]
    assert pdb["metadata"]["namespace"] == job.namespace
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pdb["spec"]["maxUnavailable"] == 0  # drains wait for a running trainer

    # The spot GPU NodePool's taints are all tolerated by the GPU pod, and it offers spot capacity.
    pool = NodePool.model_validate(_docs(DOCKER / "k8s" / "karpenter-nodepool-spot-gpu.yaml")[0])
    tolerations = pod["spec"]["tolerations"]
    for taint in pool.spec.template.spec.taints:
        assert any(
            t["key"] == taint.key
            and t["effect"] == taint.effect
            and (t["operator"] == "Exists" or t.get("value") == taint.value)
            for t in tolerations
        ), f"the training pod does not tolerate the NodePool taint {taint}"
    capacity = next(r for r in pool.spec.template.spec.requirements if r.key == "karpenter.sh/capacity-type")
    assert "spot" in capacity.values
    assert "nvidia.com/gpu" in pool.spec.limits


def test_nodepool_model_refuses_unknown_fields_and_bad_enums():
    doc = _docs(DOCKER / "k8s" / "karpenter-nodepool-spot-gpu.yaml")[0]
    doc["spec"]["disruption"]["consolidationPolicy"] = "WhenIdle"
    with pytest.raises(ValidationError, match="consolidationPolicy"):
        NodePool.model_validate(doc)
    doc = _docs(DOCKER / "k8s" / "karpenter-nodepool-spot-gpu.yaml")[0]
    doc["spec"]["template"]["spec"]["nodeClass"] = doc["spec"]["template"]["spec"].pop("nodeClassRef")
    with pytest.raises(ValidationError, match="nodeClass"):
        NodePool.model_validate(doc)


def test_pools_job_creates_the_pools_the_dags_use():
    settings = yaml.safe_load((REPO_ROOT / "airflow_settings.yaml").read_text())["airflow"]["pools"]
    config_map = next(d for d in _docs(DOCKER / "k8s" / "airflow-pools-job.yaml") if d["kind"] == "ConfigMap")
    pools = yaml.safe_load(config_map["data"]["pools.json"])
    assert set(pools) == {SPOT_POOL, ALIAS_POOL} == {pool["pool_name"] for pool in settings}
    assert pools[ALIAS_POOL]["slots"] == 1  # one alias move at a time
    assert pools[SPOT_POOL]["include_deferred"] is True  # a deferred pod launch keeps its slot


# ---- Helm values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["celery", "kubernetes"])
def test_helm_values_fit_the_chart_model(variant):
    values = load_values(HELM / "values.yaml", HELM / f"values-{variant}.yaml")
    assert values.executor == {"celery": "CeleryExecutor", "kubernetes": "KubernetesExecutor"}[variant]
    assert values.airflowVersion == AIRFLOW_VERSION
    assert values.images.airflow.repository.endswith("tollgate-airflow")
    assert values.postgresql.enabled is False and values.data.metadataSecretName
    assert values.redis.enabled is (variant == "celery")
    assert values.triggerer.enabled  # the landing-queue watcher and deferred pod launches run there
    # Connections (the signing and decision keys) come from a secrets backend, on the workers too.
    assert "SecretsManagerBackend" in values.config["secrets"]["backend"]
    assert values.config["workers"]["secrets_backend"] == values.config["secrets"]["backend"]
    # Every AIRFLOW_VAR_* names a Variable Tollgate reads; MLflow credentials come from a Secret.
    for env in values.env:
        if env.name.startswith("AIRFLOW_VAR_"):
            assert env.name.removeprefix("AIRFLOW_VAR_").lower() in VARIABLE_DEFAULTS, env.name
    assert {s.envName for s in values.secret} >= {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    names = {env.name for env in values.env}
    assert {"TOLLGATE_LANDING_QUEUE_URL", "MLFLOW_TRACKING_URI"} <= names


def test_helm_model_refuses_a_key_the_chart_does_not_have(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("workers:\n  replica: 2\n")  # the chart's key is `replicas`
    with pytest.raises(ValidationError, match="replica"):
        load_values(HELM / "values.yaml", HELM / "values-celery.yaml", broken)
    broken.write_text("executor: CeleryExcutor\n")
    with pytest.raises(ValidationError, match="executor"):
        load_values(HELM / "values.yaml", broken)


# ---- Images and their locks ------------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["airflow", "training", "serving"])
def test_every_pip_install_in_the_dockerfile_uses_the_lock(image):
    text = (DOCKER / image / "Dockerfile").read_text()
    assert dockerfiles.unpinned_installs(text, f"docker/{image}/requirements.lock") == []


def test_the_pip_check_refuses_unpinned_installs():
    text = (DOCKER / "airflow" / "Dockerfile").read_text()
    for bad in (
        "RUN pip install --no-cache-dir requests",
        "RUN python -m pip install --no-deps scikit-learn==1.9.1",
        "RUN pip install -r /tmp/requirements.lock",  # no --no-deps
        "RUN pip install --no-deps -r requirements.txt",  # not the copied lock
    ):
        assert dockerfiles.unpinned_installs(f"{text}\n{bad}\n", "docker/airflow/requirements.lock"), bad


def test_airflow_image_is_the_official_one_of_the_pinned_version():
    commands = dockerfiles.dockerfile.parse_file(str(DOCKER / "airflow" / "Dockerfile"))
    assert [c.value[0] for c in commands if c.cmd.upper() == "FROM"] == [
        f"apache/airflow:{AIRFLOW_VERSION}-python3.11"
    ]
    copied = {c.value[-1] for c in commands if c.cmd.upper() == "COPY"}
    assert {"/opt/airflow/dags/", "/opt/airflow/plugins/", "/opt/tollgate/include/"} <= copied


@pytest.mark.parametrize("image", ["airflow", "training", "serving"])
def test_image_lock_is_compiled_from_requirements_txt(image):
    """Each requirements.txt line the image needs is pinned at its version, no test tool is inside, and
    every package the image shares with the development lock has the tested version."""
    lock = image_locks.parse_lock((DOCKER / image / "requirements.lock").read_text())
    dev = image_locks.parse_lock(image_locks.DEV_LOCK.read_text())
    wanted = image_locks.image_requirements(image_locks.REQUIREMENTS.read_text(), image)
    for line in wanted:
        name, version = line.split("==")
        assert lock.get(image_locks.canonical(name.split("[")[0])) == version, (
            f"{image} lock is stale: {line}"
        )
    assert not image_locks.TEST_TOOLS & set(lock), "test tools in an image"
    differing = {name for name in set(lock) & set(dev) if lock[name] != dev[name]}
    assert differing <= ({"torch"} if image == "training" else set())


def test_training_lock_pins_the_cuda_build_and_airflow_lock_the_cpu_build():
    training = image_locks.parse_lock((DOCKER / "training" / "requirements.lock").read_text())
    airflow = image_locks.parse_lock((DOCKER / "airflow" / "requirements.lock").read_text())
    assert "+cpu" not in training["torch"] and any(
        name.startswith("nvidia-cuda-runtime") for name in training
    )
    assert airflow["torch"].endswith("+cpu") and not any(name.startswith("nvidia-") for name in airflow)
    assert "apache-airflow" not in training  # the trainer never imports Airflow
    assert airflow["apache-airflow"] == AIRFLOW_VERSION


def test_serving_lock_holds_the_router_and_none_of_the_pipeline():
    serving = image_locks.parse_lock((DOCKER / "serving" / "requirements.lock").read_text())
    assert serving["torch"].endswith("+cpu") and not any(name.startswith("nvidia-") for name in serving)
    assert {"uvicorn", "uvloop", "httptools", "starlette", "mlflow", "model-signing"} <= set(serving)
    assert not {"apache-airflow", "great-expectations", "dvc"} & set(serving)


def test_mlflow_auth_config_denies_by_default_and_holds_no_password():
    import configparser

    config = configparser.ConfigParser()
    config.read(DOCKER / "mlflow" / "basic_auth.ini")
    assert config["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert "admin_password" not in config["mlflow"]  # from MLFLOW_AUTH_ADMIN_PASSWORD, never the repo
    assert config["mlflow"]["authorization_function"].startswith("mlflow.server.auth:")
