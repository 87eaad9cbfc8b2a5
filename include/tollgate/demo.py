"""``make demo``: the main job on the embedded default, end to end, from an empty state.

Starts the local platform (or reuses the one already running), runs each pipeline stage that
exists through the Airflow REST API as a user would, and prints a summary. The platform stays up.
"""

from __future__ import annotations

import sys
import time

from tollgate.platform.api import AirflowClient
from tollgate.platform.processes import ServiceError
from tollgate.platform.stack import LocalStack


def ensure_platform(stack: LocalStack) -> None:
    if stack.running_services():
        print(f"Reusing the local platform already running in {stack.home}.")
        return
    print("Starting the local platform (Airflow + MLflow)...")
    stack.up(announce=False)


def run_dag(client: AirflowClient, dag_id: str, conf: dict | None = None, timeout: float = 600) -> dict:
    client.wait_for_dag(dag_id)
    client.unpause(dag_id)
    run = client.trigger(dag_id, conf=conf)
    print(f"  triggered {dag_id} run {run['dag_run_id']}")
    return client.wait_for_run(dag_id, run["dag_run_id"], timeout=timeout)


def main() -> int:
    started = time.monotonic()
    stack = LocalStack()
    try:
        ensure_platform(stack)
    except ServiceError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    client = AirflowClient(stack.airflow_url, "admin", stack.passwords()["admin"])
    print("Stage 0: platform smoke check")
    smoke = run_dag(client, "smoke_check")
    print(f"  smoke_check: {smoke['state']}")
    print()
    print("=" * 72)
    print(f"Demo finished in {time.monotonic() - started:.0f} s.")
    print(stack.describe())
    return 0 if smoke["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
