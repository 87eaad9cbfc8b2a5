"""The router's production manifests: rendered from docker/k8s/serving/config.yaml without drift, the
built-in kinds valid for Kubernetes (kubernetes-validate, strict), the KServe kinds valid for the KServe
SDK's own models (PyPI kserve, pinned in the `make serving-tools` environment: it clashes with the lock).
No cluster exists here; both validators are offline schema checks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tollgate.config import REPO_ROOT
from tollgate.serving.manifests import ServingConfig, dump, render

pytestmark = pytest.mark.unit
FOLDER = REPO_ROOT / "docker" / "k8s" / "serving"
KSERVE_PYTHON = REPO_ROOT / ".venv-kserve" / "bin" / "python"
K8S_VERSION = "1.32"


def kserve_problems(documents: list[dict]) -> list[str]:
    assert KSERVE_PYTHON.exists(), "the KServe tool environment is missing: run `make serving-tools`"
    result = subprocess.run(
        [str(KSERVE_PYTHON), str(REPO_ROOT / "docker" / "serving" / "validate_kserve.py")],
        input=json.dumps(documents), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return render(ServingConfig.load(FOLDER / "config.yaml"))


def test_committed_manifests_are_the_rendering_of_the_config(rendered):
    for name, documents in rendered.items():
        assert (FOLDER / name).read_text() == dump(documents), (
            f"{name} is stale: re-render it (see config.yaml)"
        )


def test_deployment_and_service_are_valid_kubernetes(rendered):
    kinds = []
    for document in rendered["router.yaml"]:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
        kinds.append(document["kind"])
    assert kinds == ["Deployment", "Service"]
    container = rendered["router.yaml"][0]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["TOLLGATE_ROUTER_ADMIN_TOKEN"]["valueFrom"]  # no secret in the manifest


def test_a_misspelled_kubernetes_field_is_caught(rendered):
    broken = json.loads(json.dumps(rendered["router.yaml"][0]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kserve_runtime_and_inference_service_are_valid_for_the_kserve_sdk(rendered):
    documents = rendered["kserve.yaml"]
    assert [d["kind"] for d in documents] == ["ClusterServingRuntime", "InferenceService"]
    assert kserve_problems(documents) == []
    runtime, service = documents
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    assert service["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]


def test_broken_kserve_manifests_are_caught(rendered):
    runtime, service = json.loads(json.dumps(rendered["kserve.yaml"]))
    service["spec"]["predictor"]["model"]["modelFormt"] = service["spec"]["predictor"]["model"].pop(
        "modelFormat"
    )
    runtime["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    problems = kserve_problems([runtime, service])
    assert any("modelFormt" in p for p in problems) and any("paht" in p for p in problems), problems


def test_unknown_config_settings_are_refused(tmp_path: Path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"replica": 3}))
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['replica'\]"):
        ServingConfig.load(tmp_path / "config.yaml")
