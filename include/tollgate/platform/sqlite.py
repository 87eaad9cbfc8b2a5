"""Connection arguments for the local platform's SQLite metadata database.

Every Airflow component, every task and the CLI write to one SQLite file. SQLite lets one writer in at a
time and, by default, a waiting writer gives up after 5 s with "database is locked", which on a busy
laptop (a backfill created while the scheduler and several tasks write) ended a CLI command or even the
scheduler. Writers wait up to a minute instead. Named by ``[database] sql_alchemy_connect_args`` (sync) and
``sql_alchemy_connect_args_async`` in the platform's environment.
"""

from __future__ import annotations

BUSY_TIMEOUT_SECONDS = 60.0

CONNECT_ARGS: dict[str, object] = {"timeout": BUSY_TIMEOUT_SECONDS}
CONNECT_ARGS_ASYNC: dict[str, object] = {"timeout": BUSY_TIMEOUT_SECONDS}
