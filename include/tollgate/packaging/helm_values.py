"""A typed model of the official Apache Airflow Helm chart's values that Tollgate sets.

There is no ``helm`` binary or cluster here, so ``docker/helm/values*.yaml`` is checked against this model:
every key Tollgate writes must be one the pinned chart version knows, with the type the chart expects
(``extra="forbid"`` everywhere, so a misspelt or moved key fails). Only the keys Tollgate uses are
modelled; the chart has hundreds more. Written from the chart's values.schema.json of the pinned version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

CHART_VERSION = "1.19.0"  # apache-airflow/airflow; its values.schema.json is what this model follows
AIRFLOW_VERSION = "3.3.2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ImageRef(_Strict):
    repository: str
    tag: str
    pullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class Images(_Strict):
    airflow: ImageRef


class Toggle(_Strict):
    enabled: bool


class Dags(_Strict):
    gitSync: Toggle | None = None
    persistence: Toggle | None = None


class Data(_Strict):
    metadataSecretName: str | None = None
    resultBackendSecretName: str | None = None
    brokerUrlSecretName: str | None = None


class EnvVar(_Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str


class SecretEnv(_Strict):
    envName: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secretName: str
    secretKey: str


class Resources(_Strict):
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}


class Workers(_Strict):
    replicas: int | None = Field(default=None, ge=0)
    persistence: Toggle | None = None
    resources: Resources | None = None


class HelmValues(_Strict):
    """The values Tollgate sets (base file merged with one executor variant)."""

    executor: Literal[
        "LocalExecutor",
        "CeleryExecutor",
        "KubernetesExecutor",
        "CeleryKubernetesExecutor",
        "LocalKubernetesExecutor",
    ]
    airflowVersion: str
    images: Images
    postgresql: Toggle
    data: Data
    fernetKeySecretName: str
    jwtSecretName: str
    apiSecretKeySecretName: str
    dags: Dags
    triggerer: Toggle
    dagProcessor: Toggle
    # airflow.cfg: section -> key -> string value (the chart renders it verbatim).
    config: dict[str, dict[str, str]]
    env: list[EnvVar]
    secret: list[SecretEnv]
    workers: Workers
    redis: Toggle
    flower: Toggle


def merge(base: dict, overlay: dict) -> dict:
    """Helm's merge of two values files: maps merge key by key, anything else the overlay replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_values(*paths: Path) -> HelmValues:
    """Merge ``-f`` files in order, as ``helm install -f a -f b`` does, and check them."""
    merged: dict = {}
    for path in paths:
        merged = merge(merged, yaml.safe_load(path.read_text()) or {})
    return HelmValues.model_validate(merged)
