"""The router's HTTP surface: pure ASGI Starlette routes (no BaseHTTPMiddleware on the predict path).

Predict: ``POST /predict`` (JSON rows) and ``POST /v2/models/{name}/infer`` (Open Inference Protocol).
Health: ``/livez``, ``/readyz``, ``/status``, ``/metrics``; V2 health and model metadata.
Admin (bearer token): ``/admin/rollout`` (GET, POST), ``/admin/rollout/renew``, ``/admin/rollout/abort``,
``/admin/reload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tollgate.serving.inputs import InputError
from tollgate.serving.outputs import to_jsonable, to_v2_outputs
from tollgate.serving.predlog import FEATURES, SERVED
from tollgate.serving.rollout import Conflict, RolloutError, in_canary, validate
from tollgate.serving.router import Router, log

VARIANT_HEADER = "x-tollgate-variant"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), default=str), status, headers, media_type="application/json"
    )


def error(status: int, message: str, field: str | None = None, **extra: Any) -> Response:
    body = {"error": message, **({"field": field} if field else {}), **extra}
    return json_response(body, status)


async def read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except ValueError as err:
        raise InputError(f"the request body is not JSON: {err}") from None


def build_app(router: Router) -> Starlette:
    settings = router.settings

    # ---- predict ---------------------------------------------------------------------------------
    async def serve(
        request: Request, body: Any, parse: Callable, key: str | None, v2: bool, shadow_payload: Any
    ) -> Response:
        kind = "v2" if v2 else "rows"
        started = time.perf_counter()
        table = router.table  # one table for the whole request: a reload never changes it midway
        request_id = request.headers.get("x-request-id") or (
            body.get("id") if v2 and isinstance(body, dict) else None
        )
        request_id = str(request_id or uuid.uuid4())
        key = str(key or request_id)
        row: dict[str, Any] = {
            "request_id": request_id,
            "ts": time.time(),
            "model_name": settings.model_name,
            "rollout_id": table.rollout.rollout_id or None,
            "request_key": key,
            "fallback": False,
            FEATURES: body,  # hashed by the log writer thread, off the response path
        }
        if table.champion is None:
            row.update(arm=None, status=503, error=router.not_ready_reason)
            router.log.append(row)
            return error(503, f"no model served: {router.not_ready_reason}", request_id=request_id)
        arm = "challenger" if table.challenger is not None and in_canary(table.rollout, key) else "champion"
        model = table.challenger if arm == "challenger" else table.champion
        status, headers = 200, {VARIANT_HEADER: arm, "x-request-id": request_id}
        try:
            model_input = parse(model.spec)
        except InputError as err:
            row.update(arm=arm, served_version=model.version, status=422, error=str(err))
            router.log.append(row)
            router.metrics.requests.labels(arm, model.version, "422").inc()
            return error(422, str(err), err.field, request_id=request_id)
        predict_started = time.perf_counter()
        try:
            output = model.predict(model_input)
        except Exception as err:
            latency = time.perf_counter() - started
            router.metrics.errors.labels(arm, model.version).inc()
            if arm != "challenger":
                row.update(
                    arm=arm,
                    served_version=model.version,
                    status=500,
                    latency_ms=latency * 1000,
                    error=f"{type(err).__name__}: {err}"[:500],
                )
                router.log.append(row)
                router.metrics.requests.labels(arm, model.version, "500").inc()
                log.warning("champion v%s failed on request %s: %s", model.version, request_id, err)
                return error(500, f"model error: {type(err).__name__}: {err}", request_id=request_id)
            router.guardrail.observe(False, latency)  # the canary failed: count it, answer with the champion
            row.update(error=f"canary v{model.version}: {type(err).__name__}: {err}"[:500], fallback=True)
            model, headers[VARIANT_HEADER] = table.champion, "champion"
            try:
                predict_started = time.perf_counter()
                output = model.predict(parse(model.spec))
            except (InputError, Exception) as again:
                row.update(arm=arm, served_version=model.version, status=500)
                router.log.append(row)
                return error(500, f"model error: {type(again).__name__}: {again}", request_id=request_id)
            model_ms = (time.perf_counter() - predict_started) * 1000  # the champion (its parse included)
        else:
            model_ms = (time.perf_counter() - predict_started) * 1000
            if arm == "challenger":
                router.guardrail.observe(True, time.perf_counter() - started)
        result = to_jsonable(output)
        if v2:
            payload = {
                "model_name": settings.model_name,
                "model_version": model.version,
                "id": request_id,
                "outputs": to_v2_outputs(output),
            }
        else:
            payload = {
                "predictions": result,
                "model_name": settings.model_name,
                "model_version": model.version,
                "variant": headers[VARIANT_HEADER],
                "request_id": request_id,
            }
        headers["x-tollgate-model-version"] = model.version
        response = json_response(payload, status, headers)
        latency = time.perf_counter() - started
        latency_metric, served_counter = router.metrics.served(arm, model.version)
        latency_metric.observe(latency)
        served_counter.inc()
        row.update(
            arm=arm,
            served_version=model.version,
            served_signature_sha256=model.signature_sha256,
            latency_ms=latency * 1000,
            model_ms=model_ms,
            status=status,
            rows=_rows(model_input),
        )
        row[SERVED] = result  # written as JSON text by the log writer thread
        if table.rollout.mode == "shadow" and table.challenger is not None:
            challenger = table.challenger

            async def mirror() -> None:  # runs once the response is sent: the user never waits for it
                router.shadow.offer(challenger, kind, shadow_payload, row)

            response.background = BackgroundTask(mirror)
        else:
            router.log.append(row)
        return response

    async def predict(request: Request) -> Response:
        try:
            body = await read_json(request)
            if not isinstance(body, dict) or "rows" not in body:
                raise InputError('the body must be a JSON object with "rows": [{field: value}, ...]', "rows")
        except InputError as err:
            return error(422, str(err), err.field)
        key = body.get("user_id") or request.headers.get("x-tollgate-user-id")
        return await serve(request, body, lambda spec: spec.from_rows(body["rows"]), key, False, body["rows"])

    async def infer_v2(request: Request) -> Response:
        name = request.path_params["name"]
        if name != settings.model_name:
            return error(
                404, f"model {name!r} is not served here; this router serves {settings.model_name!r}"
            )
        try:
            body = await read_json(request)
            if not isinstance(body, dict):
                raise InputError("the body must be a V2 inference request object", "inputs")
        except InputError as err:
            return error(422, str(err), err.field)
        parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        key = parameters.get("user_id") or request.headers.get("x-tollgate-user-id")
        return await serve(request, body, lambda spec: spec.from_v2(body), key, True, body)

    # ---- health, status, metrics -----------------------------------------------------------------
    async def livez(request: Request) -> Response:
        return json_response({"live": True})

    async def readyz(request: Request) -> Response:
        table = router.table
        if table.champion is None:
            return json_response({"ready": False, "reason": router.not_ready_reason}, 503)
        return json_response({"ready": True, "champion": table.champion.version})

    async def status(request: Request) -> Response:
        return json_response(router.status())

    async def metrics(request: Request) -> Response:
        router.metrics.shadow_depth.set(router.shadow.depth)
        return Response(router.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def v2_server(request: Request) -> Response:
        return json_response({"name": "tollgate-router", "version": "1", "extensions": []})

    async def v2_model(request: Request) -> Response:
        table = router.table
        if request.path_params["name"] != settings.model_name or table.champion is None:
            return error(404, f"model {request.path_params['name']!r} is not ready here")
        columns = (table.champion.spec.describe().get("columns")) or []
        return json_response(
            {
                "name": settings.model_name,
                "versions": [table.champion.version],
                "platform": "mlflow-pyfunc",
                "inputs": [
                    {"name": c["name"], "datatype": _v2_type(c["type"]), "shape": [-1]} for c in columns
                ],
            }
        )

    async def v2_model_ready(request: Request) -> Response:
        ready = request.path_params["name"] == settings.model_name and router.table.champion is not None
        return json_response({"name": request.path_params["name"], "ready": ready}, 200 if ready else 503)

    # ---- admin -----------------------------------------------------------------------------------
    def authorised(request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            return Response(
                json.dumps(
                    {
                        "error": "admin endpoints need 'Authorization: Bearer <token>' (the token is in "
                        f"{settings.admin_token_file})"
                    }
                ),
                401,
                {"www-authenticate": "Bearer"},
                media_type="application/json",
            )
        expected = settings.admin_token()
        if not expected or not hmac.compare_digest(header[7:].strip().encode(), expected.encode()):
            return error(403, "the bearer token is not the router's admin token")
        return None

    async def admin_body(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise InputError("the body must be a JSON object")
        return body

    def admin(handler: Callable) -> Callable:
        async def wrapped(request: Request) -> Response:
            refused = authorised(request)
            if refused is not None:
                return refused
            try:
                return await handler(request, await admin_body(request))
            except InputError as err:
                return error(422, str(err), err.field)
            except Conflict as err:
                return error(409, str(err))
            except RolloutError as err:
                return error(422, str(err))

        return wrapped

    async def get_rollout(request: Request, body: dict[str, Any]) -> Response:
        return json_response(await asyncio.to_thread(router.store.read))

    async def set_rollout(request: Request, body: dict[str, Any]) -> Response:
        mode = body.get("mode")
        challenger = body.get("challenger_version")
        weight = body.get("weight_bp", 0)
        rollout_id = body.get("rollout_id") or ""
        validate(mode, challenger, weight, rollout_id)
        lease = float(body.get("lease_seconds") or settings.default_lease_s)
        current = await asyncio.to_thread(router.store.read)
        new = replace(
            current,
            mode=mode,
            challenger_version=str(challenger) if mode != "off" else None,
            weight_bp=int(weight) if mode == "canary" else 0,
            rollout_id=rollout_id or current.rollout_id,
            lease_expires_at=time.time() + lease if mode != "off" else 0.0,
            owner=str(body.get("owner") or ""),
            aborted_reason=None,
        )
        expected = body.get("expected_revision", current.revision)
        record = await asyncio.to_thread(router.store.write, new, expected, "admin")
        applied = await router.apply_rollout(record)
        if applied.revision != record.revision:
            return error(409, f"rollout not applied: {applied.aborted_reason}", rollout=applied.to_dict())
        return json_response({"rollout": applied.to_dict(), "status": router.status()})

    async def renew(request: Request, body: dict[str, Any]) -> Response:
        current = await asyncio.to_thread(router.store.read)
        if not current.active or body.get("rollout_id") != current.rollout_id:
            raise Conflict(
                f"no active rollout {body.get('rollout_id')!r} to renew (the record holds "
                f"{current.rollout_id!r}, mode {current.mode}, aborted: {current.aborted_reason})"
            )
        lease = float(body.get("lease_seconds") or settings.default_lease_s)
        record = await asyncio.to_thread(
            router.store.write,
            replace(current, lease_expires_at=time.time() + lease),
            current.revision,
            "admin",
        )
        return json_response({"rollout": (await router.apply_rollout(record)).to_dict()})

    async def abort(request: Request, body: dict[str, Any]) -> Response:
        reason = str(body.get("reason") or "aborted by an admin call")
        record = await router.abort(reason, cause="admin")
        return json_response({"rollout": record.to_dict()})

    async def reload(request: Request, body: dict[str, Any]) -> Response:
        await router.refresh_champion(force=True)
        await router.apply_rollout(await asyncio.to_thread(router.store.read))
        return json_response(router.status())

    # ---- lifespan --------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await router.start()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_sighup()))
        yield
        await router.stop()

    async def _sighup() -> None:
        log.info("SIGHUP: reloading the champion and the rollout record")
        router.event("sighup")
        await router.refresh_champion(force=True)
        await router.apply_rollout(await asyncio.to_thread(router.store.read))

    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/v2/models/{name}/infer", infer_v2, methods=["POST"]),
        Route("/livez", livez),
        Route("/readyz", readyz),
        Route("/status", status),
        Route("/metrics", metrics),
        Route("/v2", v2_server),
        Route("/v2/health/live", livez),
        Route("/v2/health/ready", readyz),
        Route("/v2/models/{name}", v2_model),
        Route("/v2/models/{name}/ready", v2_model_ready),
        Route("/admin/rollout", admin(get_rollout), methods=["GET"]),
        Route("/admin/rollout", admin(set_rollout), methods=["POST"]),
        Route("/admin/rollout/renew", admin(renew), methods=["POST"]),
        Route("/admin/rollout/abort", admin(abort), methods=["POST"]),
        Route("/admin/reload", admin(reload), methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _rows(model_input: Any) -> int:
    try:
        return len(model_input)
    except TypeError:
        return 1


def _v2_type(kind: str) -> str:
    return {"long": "INT64", "integer": "INT32", "double": "FP64", "float": "FP32", "boolean": "BOOL"}.get(
        kind, "BYTES"
    )
