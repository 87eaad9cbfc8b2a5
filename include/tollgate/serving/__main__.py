"""``python -m tollgate.serving``: run the router on uvicorn (uvloop, httptools), one process.

Settings come from ``TOLLGATE_*`` variables (see ``tollgate.serving.settings``). SIGTERM drains in-flight
requests, finishes queued shadow work and flushes the prediction log before exiting; SIGHUP reloads.
"""

from __future__ import annotations

import logging
import os
import sys


def main() -> None:
    import uvicorn

    from tollgate.serving.app import build_app
    from tollgate.serving.router import Router
    from tollgate.serving.settings import RouterSettings

    # An unreachable MLflow must not stall the control loop for minutes: few, short HTTP retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Background threads (log writer, shadow results, control loop) hand the GIL back to the event
    # loop after at most 1 ms of Python work, not the default 5 ms: that wait lands on a request's p99.
    sys.setswitchinterval(0.001)
    settings = RouterSettings.from_env()
    app = build_app(Router(settings))
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
