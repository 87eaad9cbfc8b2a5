"""Tollgate's model registry view in the Airflow UI (Browse > Model registry).

Only the registration lives here; the app is ``tollgate.registry.ui``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from tollgate.registry.ui import create_app

URL_PREFIX = "/tollgate/registry"


class TollgateRegistryPlugin(AirflowPlugin):
    name = "tollgate_registry"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Tollgate model registry"}]
    external_views = [
        {
            "name": "Model registry",
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": "tollgate-model-registry",
        }
    ]
