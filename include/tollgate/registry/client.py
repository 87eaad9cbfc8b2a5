"""The MLflow client every registry function uses (tracking and registry on the same server)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient


def mlflow_client(tracking_uri: str | None = None) -> MlflowClient:
    from mlflow import MlflowClient

    from tollgate.config import mlflow_tracking_uri

    uri = tracking_uri or mlflow_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
