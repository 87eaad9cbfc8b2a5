"""The Airflow CLI against the local platform (like ``astro dev run``), never against ``~/airflow``.

The platform's settings (database, fernet key, DAGs folder, ports) live only in the environment that
``make up`` gives its processes. ``tollgate airflow …`` rebuilds that environment from the state
folder (``$TOLLGATE_HOME``, default ``.tollgate``) and runs the real ``airflow`` command in it, so
``tollgate airflow backfill create …`` acts on the same database the scheduler reads.

Airflow 3.3's own CLI has ``backfill create`` only; ``backfill list`` and ``backfill cancel`` are
answered here through the platform's REST API (the official ``apache-airflow-client``).

A bare ``.venv/bin/airflow`` in the clone goes through :func:`guard_bare_airflow` (installed by
``make setup`` as a ``.pth`` hook): with no ``AIRFLOW_HOME`` of the user's own, it uses the local
platform's environment too, or refuses with the command to run — it never creates ``~/airflow``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tollgate.config import state_dir

if TYPE_CHECKING:
    from tollgate.platform.api import AirflowClient

NOT_SET_UP = (
    "No local Tollgate platform in {home} (no Airflow database there yet). Start it with `make up`, "
    "then run Airflow commands as `.venv/bin/tollgate airflow <command>` "
    "(e.g. `.venv/bin/tollgate airflow dags list`). To use another Airflow instead, set AIRFLOW_HOME."
)


class NoLocalPlatform(RuntimeError):
    """The state folder holds no local platform: nothing to run the command against."""


def platform_environment(home: Path | None = None) -> tuple[dict[str, str], bool]:
    """The environment of the local platform's Airflow processes, and whether the platform is running.

    Refuses (:class:`NoLocalPlatform`) when the state folder has no Airflow database: running the
    command anyway would migrate a fresh, empty one that the platform never reads.
    """
    from tollgate.platform.stack import LocalStack

    stack = LocalStack(home or state_dir())
    if not (stack.home / "airflow" / "airflow.db").exists():
        raise NoLocalPlatform(NOT_SET_UP.format(home=stack.home))
    state = stack.read_state()
    running = bool(stack.running_services())
    if state is not None:  # the ports it was started on (tests start it on free ports)
        stack = LocalStack(Path(state.home), state.ports)
    return stack.airflow_env(), running


def for_command(env: dict[str, str], cli_args: list[str]) -> dict[str, str]:
    """``env`` with what the CLI command ``cli_args`` needs on top of the platform's environment."""
    from tollgate.platform import sqlite

    conn = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if conn.startswith("sqlite") and sqlite.begins_immediate(cli_args):
        return {**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_SESSION_MAKER": sqlite.SESSION_MAKER}
    return env


def _not_running_note(home: Path) -> str:
    return (
        f"Note: the local platform in {home} is not running; this command uses its database, but "
        "runs and backfills start only after `make up`."
    )


def airflow_binary() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def run_airflow(args: list[str]) -> int:
    """Replace this process with ``airflow <args>`` in the local platform's environment."""
    try:
        env, running = platform_environment()
    except NoLocalPlatform as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    if not running:
        print(_not_running_note(Path(env["TOLLGATE_HOME"])), file=sys.stderr)
    env = for_command(env, args)
    binary = airflow_binary()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(binary, [binary, *args], env)
    return 0  # not reached


# ---- backfill list / cancel (not in Airflow 3.3's CLI): the REST API, official client ----------------
def _admin_client(env: dict[str, str]) -> AirflowClient:
    """The official client, logged in as the platform's admin user."""
    import json

    from tollgate.platform.api import AirflowClient

    passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
    return AirflowClient(env["AIRFLOW__API__BASE_URL"], "admin", passwords["admin"])


def backfill_rest(argv: list[str]) -> int:
    """``backfill list --dag-id D`` and ``backfill cancel --id N`` against the running platform."""
    parser = argparse.ArgumentParser(prog="tollgate airflow backfill")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="List the backfills of a DAG, newest first")
    listing.add_argument("--dag-id", required=True)
    cancel = sub.add_parser("cancel", help="Cancel a backfill: its queued runs will not start")
    cancel.add_argument("--id", type=int, required=True, help="backfill id (from `backfill list`)")
    args = parser.parse_args(argv)
    try:
        env, running = platform_environment()
    except NoLocalPlatform as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    if not running:
        print(f"ERROR: the local platform in {env['TOLLGATE_HOME']} is not running: `make up` first.",
              file=sys.stderr)  # fmt: skip
        return 2
    from airflow_client.client.exceptions import ApiException

    api = _admin_client(env).backfills
    try:
        if args.action == "list":
            backfills = api.list_backfills(dag_id=args.dag_id, order_by=["-id"]).backfills
            print(f"{'id':>4}  {'from':<10}  {'to':<10}  {'state':<9}  created")
            for b in backfills:
                state = "done" if b.completed_at else ("paused" if b.is_paused else "running")
                print(f"{b.id:>4}  {b.from_date:%Y-%m-%d}  {b.to_date:%Y-%m-%d}  {state:<9}  "
                      f"{b.created_at:%Y-%m-%d %H:%M:%S}")  # fmt: skip
            if not backfills:
                print(f"(no backfills of {args.dag_id})")
        else:
            done = api.cancel_backfill(backfill_id=args.id)
            print(f"Backfill {done.id} of {done.dag_id} cancelled: runs not started will not run.")
    except ApiException as error:
        print(f"ERROR: HTTP {error.status}: {error.body or error.reason}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """``tollgate airflow <args>``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: tollgate airflow <airflow command …>\n\n"
            "Runs any Airflow CLI command against the local platform (the one `make up` started),\n"
            "e.g. `tollgate airflow dags list`, `tollgate airflow backfill create --dag-id …`.\n"
            "Also: `tollgate airflow backfill list --dag-id D`, `tollgate airflow backfill cancel --id N`."
        )
        return 0
    if argv[0] == "backfill" and len(argv) > 1 and argv[1] in ("list", "cancel"):
        return backfill_rest(argv[1:])
    if argv[:2] == ["backfill", "create"] and not any(a.startswith("--max-active-runs") for a in argv):
        # Airflow's default runs 10 days at once; the pipeline's days build on each other (rolling
        # window, dataset versions in date order), so one at a time unless asked otherwise.
        print("Note: --max-active-runs 1 (one day at a time, in date order); pass it to change.",
              file=sys.stderr)  # fmt: skip
        argv = [*argv, "--max-active-runs", "1"]
    return run_airflow(argv)


# ---- the bare `airflow` command ------------------------------------------------------------------
def _is_airflow_cli(orig_argv: list[str]) -> bool:
    """``.venv/bin/airflow …`` or ``python -m airflow …`` (``sys.argv`` is not set yet at start-up)."""
    args = orig_argv[1:]
    if args[:2] == ["-m", "airflow"]:
        return True
    return bool(args) and Path(args[0]).name == "airflow"


def guard_bare_airflow() -> None:
    """Called at interpreter start-up (``.pth``): point a bare ``airflow`` at the local platform.

    Skipped when the user chose an Airflow (``AIRFLOW_HOME`` or a database URL set), which is also the
    case for every process the platform itself starts. Otherwise the platform's environment is
    applied, or the command is refused with the right one to run.
    """
    if not _is_airflow_cli(list(sys.orig_argv)):
        return
    if os.environ.get("AIRFLOW_HOME") or os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        return
    try:
        env, running = platform_environment()
    except NoLocalPlatform as error:
        sys.stderr.write(f"ERROR: {error}\n")
        sys.stderr.flush()
        os._exit(2)  # a SystemExit here would abort interpreter start-up with a traceback
    if not running:
        sys.stderr.write(_not_running_note(Path(env["TOLLGATE_HOME"])) + "\n")
    args = list(sys.orig_argv)[1:]
    os.environ.update(for_command(env, args[2:] if args[:2] == ["-m", "airflow"] else args[1:]))
