"""The model registry view inside the Airflow UI (a FastAPI app mounted by ``plugins/tollgate_registry.py``).

``GET /?model=NAME``           HTML table of the registered model's versions: aliases, signature status
                               (verified live against the trusted keys), dataset rev, the metrics of
                               its signed provenance, links to MLflow and to the version's lineage
``GET /api/versions``          the same rows as JSON
``GET /api/versions/{v}/lineage``  the lineage walk of one version (or alias)

Every route needs a signed-in Airflow user (the UI's session cookie or an API bearer token). Settings
come from the same Variables the DAGs use (``?model=`` shows another registered model); the MLflow
server from ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse

from tollgate.registry.view_cache import VerificationCache, verification_key

MAX_VERSIONS = 20  # newest first
VERIFIED = VerificationCache()  # this process's verification results, by what decides them (view_cache.py)


async def airflow_user(request: Request) -> Any:
    """The signed-in Airflow user (bearer token, else the UI's ``_token`` cookie); 401/403 otherwise."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    return await resolve_user_from_token(token)


def _variable(name: str, fallback: str | None = None) -> str | None:
    """An Airflow Variable read in the api-server (metadata DB or secrets backend), else ``fallback``."""
    try:
        from airflow.sdk import Variable  # in the api-server this reads the metadata DB

        return Variable.get(name, default=fallback)
    except Exception:
        return fallback


UNREADABLE = "\0unreadable"  # a key setting that could not be read: the view trusts no key at all


def _key_variable(name: str) -> str:
    """A trusted-keys Variable; its embedded default only when it is unset, never when reading fails
    (a broken secrets backend must not make the view trust a built-in development key)."""
    from tollgate.config import default_for

    try:
        from airflow.sdk import Variable

        return Variable.get(name, default=default_for(name))
    except Exception:
        return UNREADABLE


MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\- ]{0,199}$")


def view_settings(model: str | None = None) -> dict[str, str]:
    from fastapi import HTTPException

    from tollgate.config import default_for, mlflow_tracking_uri

    if model is not None and not MODEL_NAME.match(model):
        raise HTTPException(
            400, "Parameter model: use letters, digits, '.', '_', '-' and spaces (1 to 200 characters)."
        )

    tracking = mlflow_tracking_uri()
    return {
        "model_name": model
        or _variable("tollgate_registered_model")
        or default_for("tollgate_registered_model"),
        "trusted_keys": _key_variable("tollgate_trusted_public_keys"),
        "decision_keys": _key_variable("tollgate_decision_public_keys"),
        "tracking_uri": tracking,
        "mlflow_ui_url": _variable("tollgate_mlflow_ui_url") or tracking,
    }


def version_rows(settings: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per version, newest first."""
    from tollgate.registry import names
    from tollgate.registry.client import mlflow_client
    from tollgate.registry.keys import SigningKeyError, resolve_trusted_keys
    from tollgate.registry.lineage import mlflow_links
    from tollgate.registry.verify import verify_model_version

    settings = settings or view_settings()
    name = settings["model_name"]
    if not MODEL_NAME.match(name):  # it goes into an MLflow filter string: letters, digits, . _ - space
        raise ValueError(
            f"Model name {name[:80]!r} is not allowed here: use letters, digits, '.', '_', '-' and spaces."
        )
    client = mlflow_client(settings["tracking_uri"])
    versions = client.search_model_versions(
        f"name = '{name}'", max_results=MAX_VERSIONS, order_by=["version_number DESC"]
    )
    trusted: Any = None
    decision_keys: Any = None
    key_problem = None
    try:
        for setting in ("trusted_keys", "decision_keys"):
            if settings.get(setting) == UNREADABLE:
                raise SigningKeyError(
                    f"the {setting.replace('_', ' ')} setting cannot be read (Variable or secrets backend "
                    "error): no key is trusted until it can"
                )
        trusted = resolve_trusted_keys(settings["trusted_keys"])
        decision_keys = resolve_trusted_keys(settings["decision_keys"])
    except SigningKeyError as err:
        trusted, decision_keys, key_problem = None, None, str(err)
    rows = []
    for summary in versions:
        version = client.get_model_version(name, summary.version)  # search results omit aliases
        if trusted is None:
            check = {"ok": False, "problems": [key_problem], "provenance": None, "signer_key_id": None}
        else:
            check = VERIFIED.get_or_verify(
                verification_key(client, version, settings["trusted_keys"]),
                lambda number=version.version: verify_model_version(
                    name, number, trusted, client=client, deadline_s=20
                ).to_dict(),
            )
        authorisation = _champion_authorisation(name, version, check, decision_keys, key_problem)
        predicate = (check.get("provenance") or {}).get("predicate", {})
        metrics = predicate.get("metrics") or {}
        run = None
        if version.run_id:
            try:
                run = client.get_run(version.run_id)
            except Exception:
                run = None
        rows.append(
            {
                "version": str(version.version),
                "aliases": sorted(version.aliases or []),
                "approval": authorisation,
                # champion without a valid approval attestation: set directly in MLflow, not by promote
                "unauthorised_aliases": [
                    a for a in (version.aliases or []) if a == names.CHAMPION and not authorisation["ok"]
                ],
                "signature": "verified" if check["ok"] else "refused",
                "problems": check["problems"],
                "signer_key_id": check.get("signer_key_id"),
                "checked_at": check.get("checked_at"),  # when this result was computed (reused until then)
                "checked": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(check["checked_at"]))
                if check.get("checked_at")
                else None,
                "dataset_rev": version.tags.get(names.TAG_DATASET_REV),
                "training_run_id": version.tags.get(names.TAG_TRAINING_RUN_ID),
                # whatever the example's trainer recorded in the signed provenance (task-type agnostic)
                "metrics": {k: v for k, v in sorted(metrics.items()) if isinstance(v, int | float)},
                "created": time.strftime(
                    "%Y-%m-%d %H:%M:%S UTC", time.gmtime(version.creation_timestamp / 1000)
                ),
                "links": mlflow_links(
                    settings["mlflow_ui_url"],
                    name,
                    str(version.version),
                    run.info.experiment_id if run else None,
                    version.run_id,
                ),
            }
        )
    return rows


def _champion_authorisation(
    name: str, version: Any, check: dict[str, Any], decision_keys: Any, key_problem: str | None
) -> dict[str, Any]:
    """Whether the version holds a valid signed approval for its verified signature digest."""
    from tollgate.registry import attestation

    if decision_keys is None:
        return {"ok": False, "by": None, "problems": [key_problem or "no trusted decision keys"]}
    result = attestation.check_version(
        dict(version.tags),
        decision_keys,
        decision=attestation.APPROVED,
        model_name=name,
        version=str(version.version),
        signature_sha256=check.get("signature_sha256") if check.get("ok") else None,
    )
    return {"ok": result.ok, "by": result.predicate.get("decided_by"), "problems": result.problems}


# Every value goes through Jinja2's autoescape; nothing is put into HTML by string formatting.
_HTML = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_HTML.filters["fmt"] = lambda v: f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else v)
_PAGE = _HTML.from_string(
    """<!doctype html>
<html><head><meta charset="utf-8"><title>Tollgate model registry</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5rem; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .4rem .6rem; text-align: left; vertical-align: top; }
.ok { color: #137333; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
small { color: #555; }
</style></head>
<body><h2>Model registry: {{ name }}</h2>
<p>Every version's files are checked against its signature and the trusted keys; a check is reused while the
signature, the stored files' names and sizes, the tags and the keys are unchanged (at most {{ ttl }} s).</p>
<table><thead><tr>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{%- for row in rows %}
<tr data-version="{{ row.version }}">
<td>{{ row.version }}</td>
<td>{{ row.aliases | join(", ") or "-" }}
{%- for alias in row.unauthorised_aliases %}<br>
<span class="bad">&#10008; {{ alias }} UNAUTHORISED: no valid approval attestation</span>{% endfor %}</td>
<td>{% if row.signature == "verified" -%}
<span class="ok">&#10004; verified</span><br><small>key {{ (row.signer_key_id or "")[:16] }}</small>
{%- else -%}
<span class="bad">&#10008; refused</span><br>
<small>{% for p in row.problems %}{{ p }}{% if not loop.last %}<br>{% endif %}{% endfor %}</small>
{%- endif %}{% if row.checked %}<br><small>checked {{ row.checked }}</small>{% endif %}</td>
<td><code>{{ row.dataset_rev | fmt }}</code></td>
<td>{{ row.training_run_id | fmt }}</td>
<td>{% for k, v in row.metrics.items() %}{{ k }} {{ v | fmt }}{% if not loop.last %}<br>{% endif %}
{%- else %}-{% endfor %}</td>
<td>{{ row.created }}</td>
<td>{% for label, key in (("MLflow version", "model_version"), ("training run", "training_run")) -%}
{% if (row.links.get(key) or "").startswith(("http://", "https://")) %}
<a href="{{ row.links[key] }}" target="_blank" rel="noopener">{{ label }}</a> {% endif %}
{%- endfor %}
<a href="api/versions/{{ row.version | urlencode }}/lineage?model={{ name | urlencode }}">lineage</a></td>
</tr>
{%- else %}
<tr><td colspan="{{ headers | length }}">No versions registered yet.</td></tr>
{%- endfor %}
</tbody></table></body></html>"""
)
HEADERS = (
    "Version",
    "Aliases",
    "Signature",
    "Dataset rev",
    "Training run",
    "Signed metrics",
    "Created",
    "Links",
)


def render_page(name: str, rows: list[dict[str, Any]]) -> str:
    return _PAGE.render(name=name, rows=rows, headers=HEADERS, ttl=int(VERIFIED.ttl_s))


def create_app(require_user: Callable[..., Any] = airflow_user) -> FastAPI:
    app = FastAPI(
        title="Tollgate model registry",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(require_user)],  # every route needs a signed-in Airflow user
    )

    @app.get("/", response_class=HTMLResponse)
    def index(model: str | None = None) -> HTMLResponse:
        settings = view_settings(model)
        return HTMLResponse(render_page(settings["model_name"], version_rows(settings)))

    @app.get("/api/versions")
    def versions(model: str | None = None) -> dict[str, Any]:
        settings = view_settings(model)
        return {"model_name": settings["model_name"], "versions": version_rows(settings)}

    @app.get("/api/versions/{version_or_alias}/lineage")
    def lineage(version_or_alias: str, model: str | None = None) -> dict[str, Any]:
        from fastapi import HTTPException

        from tollgate.registry.lineage import model_lineage

        settings = view_settings(model)
        try:
            return model_lineage(
                settings["model_name"],
                version_or_alias,
                settings["trusted_keys"],
                tracking_uri=settings["tracking_uri"],
                mlflow_ui_url=settings["mlflow_ui_url"],
            )
        except LookupError as err:
            raise HTTPException(status_code=404, detail=str(err)) from None

    return app
