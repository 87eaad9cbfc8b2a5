"""Data-quality reports of the ingest gate in the Airflow UI (Browse > Data quality reports, and a tab on
each dataset_ingest run). The app lives in ``tollgate.data.reports_app``; this file only registers it."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from tollgate.data.reports_app import URL_PREFIX, create_app

_HREF = URL_PREFIX.lstrip("/")  # relative to the UI's base URL (works behind a reverse proxy)


class TollgateDataReportsPlugin(AirflowPlugin):
    name = "tollgate_data_reports"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Tollgate data-quality reports"}]
    external_views = [
        {
            "name": "Data quality reports",
            "href": f"{_HREF}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "tollgate-data-reports",
        },
        {
            "name": "Data quality",
            "href": f"{_HREF}/run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "tollgate-data-run-report",
        },
    ]
