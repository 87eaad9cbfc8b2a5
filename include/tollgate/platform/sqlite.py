"""Connection arguments for the local platform's SQLite metadata database.

Every Airflow component, every task and the CLI write to one SQLite file. SQLite lets one writer in at a
time and, by default, a waiting writer gives up after 5 s with "database is locked", which on a busy
laptop (a backfill created while the scheduler and several tasks write) ended a CLI command or even the
scheduler. Writers wait up to a minute instead. Named by ``[database] sql_alchemy_connect_args`` (sync) and
``sql_alchemy_connect_args_async`` in the platform's environment.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import sessionmaker

BUSY_TIMEOUT_SECONDS = 60.0

CONNECT_ARGS: dict[str, object] = {"timeout": BUSY_TIMEOUT_SECONDS}
CONNECT_ARGS_ASYNC: dict[str, object] = {"timeout": BUSY_TIMEOUT_SECONDS}


# ---- CLI processes: take the write lock when a transaction begins ---------------------------------
# Airflow runs SQLite in WAL mode with deferred transactions. A transaction that has read (e.g. inside
# the SAVEPOINT that ``backfill create`` opens per day) and then writes after another process committed
# gets "database is locked" at once: SQLite cannot upgrade a stale read snapshot, and the busy timeout
# does not apply (SQLITE_BUSY_SNAPSHOT). Seen when a backfill was created while the scheduler ran.
# A CLI command's transactions are short, so they begin IMMEDIATE: the write lock is taken first, and a
# busy database is waited for (up to the timeout) instead of failing. ``tasks test`` too: it runs the task
# against an in-process API whose short request sessions hit the same error under load (CI: the task
# failed at its start, the command still exited 0); its own sessions are closed while the task runs.
# Not for services or ``dags test`` (their sessions stay open while other connections must write).
SESSION_MAKER = "tollgate.platform.sqlite.immediate_session_maker"

LONG_RUNNING_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("dags", "test"),
    ("scheduler",),
    ("triggerer",),
    ("dag-processor",),
    ("api-server",),
    ("standalone",),
    ("celery",),
    ("db",),
)


def begins_immediate(cli_args: list[str]) -> bool:
    """Whether the Airflow CLI command ``cli_args`` gets IMMEDIATE transactions."""
    words = [a for a in cli_args if not a.startswith("-")]
    return bool(words) and not any(tuple(words[: len(c)]) == c for c in LONG_RUNNING_COMMANDS)


def immediate_session_maker(engine: Engine) -> sessionmaker:
    """``[database] sql_alchemy_session_maker``: sessions whose transactions begin IMMEDIATE."""

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        driver = connection.connection.driver_connection
        if driver.isolation_level is not None:
            driver.isolation_level = None  # the driver must not open its own (deferred) transactions
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return sessionmaker(engine, autoflush=False, expire_on_commit=False)
