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

import json
import mimetypes
from typing import Any
from urllib.parse import quote

import jinja2
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


# Every value goes through Jinja2's autoescape (partition names, statuses, expectation names and paths come
# from stored files); nothing is put into HTML by string formatting.
_HTML = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_PAGE = _HTML.from_string(
    """<!doctype html><html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1a202c}
table{border-collapse:collapse}td,th{border:1px solid #cbd5e0;padding:.3rem .6rem;text-align:left}
.rejected{color:#c53030;font-weight:600}.passed{color:#2f855a}.passed_with_quarantine{color:#b7791f}</style>
</head><body><h2>{{ title }}</h2>
{% if root is not none %}<p>Storage root: <code>{{ root }}</code></p>{% endif %}
{% if message %}<p>{{ message }}</p>{% endif %}
{% if rows is not none %}{% if rows %}<table>
<tr><th>partition</th><th>status</th><th>landed</th><th>clean</th><th>quarantined</th>
<th>failed expectations</th><th>evidence</th></tr>
{% for row in rows %}<tr>
<td><a href="{{ base }}/dt/{{ row.partition | urlencode }}">{{ row.partition }}</a></td>
<td class="{{ row.status }}">{{ row.status }}</td><td>{{ row.landed }}</td><td>{{ row.clean }}</td>
<td>{{ row.quarantined }}</td>
<td>{% for f in row.failed %}{{ f }}{% if not loop.last %}<br>{% endif %}{% endfor %}</td>
<td>{% for label, href in row.links %}<a href="{{ href }}">{{ label }}</a>{% if not loop.last %} · {% endif %}
{% endfor %}</td></tr>
{% endfor %}</table>{% else %}<p>No partition has been through the gate yet.</p>{% endif %}{% endif %}
</body></html>"""
)


def _page(
    title: str, *, rows: list[dict[str, Any]] | None = None, base: str = ".", root: str | None = None,
    message: str = "",
) -> HTMLResponse:  # fmt: skip
    shown = None if rows is None else [_table_row(row, base) for row in rows]
    return HTMLResponse(_PAGE.render(title=title, rows=shown, base=base, root=root, message=message))


SAFE = "/="  # path characters kept as they are in links (report folders are named dt=YYYY-MM-DD)


def _table_row(row: dict[str, Any], base: str) -> dict[str, Any]:
    path = row["_path"]
    where = quote(path, safe=SAFE)
    failed = list(row.get("batch_failures") or {}) or [
        f"{name}: {count}" for name, count in sorted((row.get("row_failures") or {}).items())
    ]
    links = [("JSON", f"{base}/files/{where}/validation.json")]
    if row.get("docs_uri"):
        links.insert(0, ("Data Docs", f"{base}/files/{where}/data_docs/index.html"))
    if row.get("quarantine_uri"):
        quarantine = path.replace("reports/", "quarantine/", 1)
        links.append(("quarantine reasons", f"{base}/files/{quote(quarantine, safe=SAFE)}/reasons.json"))
    return {
        "partition": str(row.get("partition")),
        "status": str(row.get("status")),
        "landed": row.get("landed_rows"),
        "clean": row.get("clean_rows"),
        "quarantined": row.get("quarantined_rows"),
        "failed": failed,
        "links": links,
    }


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
        return _page("Data quality reports", rows=partitions(the_root), base=".", root=the_root)

    @app.get("/dt/{partition}", response_class=HTMLResponse)
    def partition_view(partition: str) -> HTMLResponse:
        rows = [row for row in partitions(current_root()) if row["partition"] == partition]
        if not rows:
            raise HTTPException(404, f"No gate report for dt={partition} under {current_root()}.")
        return _page(f"dt={partition}", rows=rows, base="..")

    @app.get("/run")
    def run_view(dag_id: str, run_id: str) -> Response:
        partition = _run_partition(dag_id, run_id)
        if partition is None:
            return _page("Data quality report", message="This run has not located a partition (yet).")
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
