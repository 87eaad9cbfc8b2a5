"""Data-quality reports in the Airflow UI: a small FastAPI app the plugin mounts on the api-server.

    /tollgate-data/                      every gated partition: status, rows, links
    /tollgate-data/dt/2024-03-01         the partition's reports (one per distinct input)
    /tollgate-data/run?dag_id=&run_id=   the reports of the partition a dataset_ingest run gated
    /tollgate-data/files/<path>          a stored file (Data Docs HTML, validation.json, reasons.json)

Files are read from the storage root (Variable ``tollgate_storage_root``: local folder or S3) through
the same storage layer the gate writes with. Every route needs a logged-in Airflow user (the UI's
session cookie or a bearer token): reports quote rows of data.
"""

from __future__ import annotations

import html
import json
import mimetypes
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tollgate import storage
from tollgate.config import default_for

URL_PREFIX = "/tollgate-data"
STORAGE_VARIABLE = "tollgate_storage_root"


async def require_login(request: Request) -> Any:
    """The Airflow user behind the request (bearer token or UI cookie); 401/403 otherwise."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    return await resolve_user_from_token(token)


def storage_root() -> str:
    """The Variable's value as the api-server sees it (metadata DB, secrets backend or env)."""
    try:
        from airflow.models.variable import Variable

        return Variable.get(STORAGE_VARIABLE, default_var=default_for(STORAGE_VARIABLE))
    except Exception:  # no metadata DB reachable (e.g. a unit test): the embedded default
        return default_for(STORAGE_VARIABLE)


def partitions(root: str) -> list[dict[str, Any]]:
    """Every stored gate outcome, newest partition first."""
    found = []
    reports = storage.join(root, "reports")
    for folder in reversed(storage.list_dir(reports)):
        if not folder.startswith("dt="):
            continue
        for key in storage.list_dir(storage.join(reports, folder)):
            outcome_uri = storage.join(reports, folder, key, "outcome.json")
            try:
                outcome = json.loads(storage.read_bytes(outcome_uri))
            except (storage.StorageError, ValueError):
                continue  # a gate still running, or an attempt that crashed before deciding
            found.append({**outcome, "_path": f"reports/{folder}/{key}"})
    return found


def _page(title: str, body: str) -> HTMLResponse:
    style = (
        "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1a202c}"
        "table{border-collapse:collapse}td,th{border:1px solid #cbd5e0;padding:.3rem .6rem;text-align:left}"
        ".rejected{color:#c53030;font-weight:600}.passed{color:#2f855a}.passed_with_quarantine{color:#b7791f}"
    )
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h2>{html.escape(title)}</h2>{body}</body></html>"
    )


def _table(rows: list[dict[str, Any]], base: str) -> str:
    if not rows:
        return "<p>No partition has been through the gate yet.</p>"
    head = (
        "<tr><th>partition</th><th>status</th><th>landed</th><th>clean</th><th>quarantined</th>"
        "<th>failed expectations</th><th>evidence</th></tr>"
    )
    lines = []
    for row in rows:
        path = row["_path"]
        failed = list(row.get("batch_failures") or {}) or [
            f"{name}: {count}" for name, count in sorted((row.get("row_failures") or {}).items())
        ]
        links = [f"<a href='{base}/files/{path}/validation.json'>JSON</a>"]
        if row.get("docs_uri"):
            links.insert(0, f"<a href='{base}/files/{path}/data_docs/index.html'>Data Docs</a>")
        if row.get("quarantine_uri"):
            quarantine = path.replace("reports/", "quarantine/", 1)
            links.append(f"<a href='{base}/files/{quarantine}/reasons.json'>quarantine reasons</a>")
        status = html.escape(str(row.get("status")))
        lines.append(
            f"<tr><td><a href='{base}/dt/{row['partition']}'>{row['partition']}</a></td>"
            f"<td class='{status}'>{status}</td><td>{row.get('landed_rows')}</td>"
            f"<td>{row.get('clean_rows')}</td>"
            f"<td>{row.get('quarantined_rows')}</td><td>{'<br>'.join(html.escape(f) for f in failed)}</td>"
            f"<td>{' · '.join(links)}</td></tr>"
        )
    return f"<table>{head}{''.join(lines)}</table>"


def _run_partition(dag_id: str, run_id: str) -> str | None:
    """The partition a dataset_ingest run worked on (XCom of locate_partition), if any."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = XComModel.get_many(
            run_id=run_id, dag_ids=dag_id, task_ids="locate_partition", key="return_value", session=session
        ).first()
        value = XComModel.deserialize_value(row) if row is not None else None
    return value.get("partition") if isinstance(value, dict) else None


def create_app(root: str | None = None) -> FastAPI:
    """The reports app; ``root`` fixes the storage root (tests), else the Variable is read per request."""
    app = FastAPI(title="Tollgate data-quality reports", dependencies=[Depends(require_login)])

    def current_root() -> str:
        return root or storage_root()

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        the_root = current_root()
        return _page(
            "Data quality reports",
            f"<p>Storage root: <code>{html.escape(the_root)}</code></p>" + _table(partitions(the_root), "."),
        )

    @app.get("/dt/{partition}", response_class=HTMLResponse)
    def partition_view(partition: str) -> HTMLResponse:
        rows = [row for row in partitions(current_root()) if row["partition"] == partition]
        if not rows:
            raise HTTPException(404, f"No gate report for dt={partition} under {current_root()}.")
        return _page(f"dt={partition}", _table(rows, ".."))

    @app.get("/run")
    def run_view(dag_id: str, run_id: str) -> Response:
        partition = _run_partition(dag_id, run_id)
        if partition is None:
            return _page("Data quality report", "<p>This run has not located a partition (yet).</p>")
        return RedirectResponse(f"dt/{partition}")

    @app.get("/files/{path:path}")
    def files(path: str) -> Response:
        parts = [part for part in path.split("/") if part]
        if not parts or parts[0] not in ("reports", "quarantine") or any(p in (".", "..") for p in parts):
            raise HTTPException(404, "Only files under reports/ and quarantine/ are served.")
        uri = storage.join(current_root(), *parts)
        try:
            data = storage.read_bytes(uri)
        except storage.StorageError:
            raise HTTPException(404, f"No file at {uri}.") from None
        media_type = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
        # Stored HTML (Data Docs) is served on the Airflow origin: sandbox it, so its scripts can never act
        # with the signed-in user's session.
        return Response(
            content=data,
            media_type=media_type,
            headers={"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"},
        )

    return app
