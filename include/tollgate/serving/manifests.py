"""Production manifests of the router, rendered from one configuration file.

``python -m tollgate.serving.manifests --config docker/k8s/serving/config.yaml --out docker/k8s/serving``
writes ``router.yaml`` (Deployment + Service: one router process per pod, replicas for cores) and
``kserve.yaml`` (a ``ClusterServingRuntime`` using the router image, and an ``InferenceService`` of it).
KServe's stock MLflow runtime installs none of the pyfunc's dependencies and verifies no signature; this
runtime verifies at start-up and stays unready until a verified, approved champion is loaded. Model
canaries run inside the router (stickiness, shadow, guardrail), so KServe's own canary only rolls out
new router images. The pods get the trusted public keys from a Secret and the admin token from another;
nothing secret is rendered into the manifests.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

RUNTIME_FORMAT = "tollgate-router"
KEYS_MOUNT = "/etc/tollgate/keys"


@dataclass(frozen=True)
class ServingConfig:
    namespace: str = "tollgate"
    name: str = "tollgate-router"
    image: str = "ghcr.io/tollgate-mlops/tollgate-serving:0.1.0"
    model_name: str = "tollgate-ctr"
    replicas: int = 2
    port: int = 8000
    kserve_port: int = 8080  # KServe routes to the runtime container's port 8080 by convention
    mlflow_tracking_uri: str = "http://mlflow.tollgate.svc.cluster.local:5000"
    storage_root: str = "s3://tollgate/storage"
    s3_endpoint_url: str = ""  # MinIO or another S3-compatible store; empty = AWS
    keys_secret: str = "tollgate-serving-keys"  # holds model-signing.pub and decision.pub
    admin_token_secret: str = "tollgate-router-admin"  # holds the key "token"
    service_account: str = "tollgate-serving"
    cpu: str = "1"
    memory: str = "2Gi"
    alias_poll_seconds: int = 10
    rollout_poll_seconds: int = 2
    # The shadow worker shares the router's CPU in a pod; SCHED_IDLE gives the CPU back the moment a request
    # arrives (the lowest cost measured on a shared core), and under saturation the shadow drops and counts.
    shadow_idle_priority: bool = True
    guardrail: dict[str, str] = field(
        default_factory=lambda: {"max_error_rate": "0.05", "max_p99_ms": "250", "window_seconds": "30"}
    )

    @classmethod
    def load(cls, path: Path) -> ServingConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {unknown}; known: {sorted(known)}")
        return cls(**raw)


def _env(config: ServingConfig, port: int) -> list[dict[str, Any]]:
    plain = {
        "TOLLGATE_ROUTER_HOST": "0.0.0.0",
        "TOLLGATE_ROUTER_PORT": str(port),
        "TOLLGATE_ROUTER_MODEL": config.model_name,
        "MLFLOW_TRACKING_URI": config.mlflow_tracking_uri,
        "TOLLGATE_STORAGE_ROOT": config.storage_root,
        "TOLLGATE_HOME": "/tmp/tollgate",
        "TOLLGATE_TRUSTED_PUBLIC_KEYS": f"{KEYS_MOUNT}/model-signing.pub",
        "TOLLGATE_DECISION_PUBLIC_KEYS": f"{KEYS_MOUNT}/decision.pub",
        "TOLLGATE_ROUTER_ALIAS_POLL_SECONDS": str(config.alias_poll_seconds),
        "TOLLGATE_ROUTER_ROLLOUT_POLL_SECONDS": str(config.rollout_poll_seconds),
        "TOLLGATE_ROUTER_SHADOW_IDLE_PRIORITY": str(config.shadow_idle_priority).lower(),
        "TOLLGATE_ROUTER_GUARDRAIL_MAX_ERROR_RATE": config.guardrail.get("max_error_rate", "0.05"),
        "TOLLGATE_ROUTER_GUARDRAIL_MAX_P99_MS": config.guardrail.get("max_p99_ms", "250"),
        "TOLLGATE_ROUTER_GUARDRAIL_WINDOW_SECONDS": config.guardrail.get("window_seconds", "30"),
    }
    if config.s3_endpoint_url:
        plain["AWS_ENDPOINT_URL_S3"] = config.s3_endpoint_url
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
    env.append({
        "name": "TOLLGATE_ROUTER_ADMIN_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": config.admin_token_secret, "key": "token"}},
    })  # fmt: skip
    return env


def _container(config: ServingConfig, name: str, port: int) -> dict[str, Any]:
    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": port},
            "periodSeconds": period,
            "failureThreshold": failures,
        }

    return {
        "name": name,
        "image": config.image,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": _env(config, port),
        "resources": {
            "requests": {"cpu": config.cpu, "memory": config.memory},
            "limits": {"cpu": config.cpu, "memory": config.memory},
        },
        "livenessProbe": probe("/livez", 10, 3),
        "readinessProbe": probe("/readyz", 2, 1),
        "startupProbe": probe("/livez", 2, 60),
        "volumeMounts": [
            {"name": "keys", "mountPath": KEYS_MOUNT, "readOnly": True},
            {"name": "work", "mountPath": "/tmp"},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _volumes(config: ServingConfig) -> list[dict[str, Any]]:
    return [
        {"name": "keys", "secret": {"secretName": config.keys_secret}},
        {"name": "work", "emptyDir": {}},
    ]


def deployment(config: ServingConfig) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": config.name, "app.kubernetes.io/part-of": "tollgate"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": config.name, "namespace": config.namespace, "labels": labels},
        "spec": {
            "replicas": config.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": config.name}},
            # A new pod serves only once ready (verified champion); an old one leaves only after that.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": config.service_account,
                    # SIGTERM: drain, finish shadow work, flush the prediction log (uvicorn waits up to 30 s).
                    "terminationGracePeriodSeconds": 45,
                    "containers": [_container(config, "router", config.port)],
                    "volumes": _volumes(config),
                },
            },
        },
    }


def service(config: ServingConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": config.name, "namespace": config.namespace},
        "spec": {
            "selector": {"app.kubernetes.io/name": config.name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def cluster_serving_runtime(config: ServingConfig) -> dict[str, Any]:
    container = _container(config, "kserve-container", config.kserve_port)
    container.pop("volumeMounts")
    container["volumeMounts"] = [{"name": "work", "mountPath": "/tmp"}]
    # The cluster-wide runtime mounts no Secret: the public keys come in as environment (inline PEM),
    # read from the Secret of the InferenceService's namespace.
    key_vars = ("TOLLGATE_TRUSTED_PUBLIC_KEYS", "TOLLGATE_DECISION_PUBLIC_KEYS")
    container["env"] = [e for e in container["env"] if e["name"] not in key_vars] + [
        {"name": "TOLLGATE_TRUSTED_PUBLIC_KEYS",
         "valueFrom": {"secretKeyRef": {"name": config.keys_secret, "key": "model-signing.pub"}}},
        {"name": "TOLLGATE_DECISION_PUBLIC_KEYS",
         "valueFrom": {"secretKeyRef": {"name": config.keys_secret, "key": "decision.pub"}}},
    ]  # fmt: skip
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": RUNTIME_FORMAT},
        "spec": {
            "supportedModelFormats": [{"name": RUNTIME_FORMAT, "version": "1", "autoSelect": True}],
            "protocolVersions": ["v2"],
            "multiModel": False,
            "containers": [container],
            "volumes": [{"name": "work", "emptyDir": {}}],
        },
    }


def inference_service(config: ServingConfig) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": config.model_name,
            "namespace": config.namespace,
            "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
        },
        "spec": {
            "predictor": {
                "minReplicas": config.replicas,
                "serviceAccountName": config.service_account,
                "model": {
                    "modelFormat": {"name": RUNTIME_FORMAT, "version": "1"},
                    "runtime": RUNTIME_FORMAT,
                    "protocolVersion": "v2",
                },
            }
        },
    }


def render(config: ServingConfig) -> dict[str, list[dict[str, Any]]]:
    """File name -> the manifests it holds."""
    return {
        "router.yaml": [deployment(config), service(config)],
        "kserve.yaml": [cluster_serving_runtime(config), inference_service(config)],
    }


def dump(documents: list[dict[str, Any]]) -> str:
    header = "# Rendered by `python -m tollgate.serving.manifests` from config.yaml; do not edit by hand.\n"
    return header + yaml.safe_dump_all(documents, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tollgate.serving.manifests", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", type=Path, default=Path("docker/k8s/serving/config.yaml"))
    parser.add_argument("--out", type=Path, default=Path("docker/k8s/serving"))
    args = parser.parse_args(argv)
    config = ServingConfig.load(args.config) if args.config.exists() else ServingConfig()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, documents in render(config).items():
        (args.out / name).write_text(dump(documents))
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
