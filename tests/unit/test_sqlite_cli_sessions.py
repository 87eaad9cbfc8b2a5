"""The CLI's SQLite sessions wait for a busy database instead of failing with "database is locked".

Airflow runs SQLite in WAL mode with deferred transactions. The first test reproduces, on a real
SQLite file with Airflow's own connection settings, how ``backfill create`` failed in CI while the
scheduler wrote: a transaction that has read and then writes after another connection committed fails
at once. The second shows the same sequence through :func:`immediate_session_maker` completing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from tollgate.platform import sqlite
from tollgate.platform.airflow_cli import for_command

pytestmark = pytest.mark.unit


def _engine(path: Path) -> sa.Engine:
    """An engine set up as Airflow sets up its SQLite metadata database (WAL, the platform's timeout)."""
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={**sqlite.CONNECT_ARGS, "timeout": 5})

    @sa.event.listens_for(engine, "connect")
    def _wal(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    return engine


def _runs_table(path: Path) -> None:
    with _engine(path).begin() as connection:
        connection.exec_driver_sql("CREATE TABLE dag_run (run_id TEXT PRIMARY KEY)")
        connection.exec_driver_sql("INSERT INTO dag_run VALUES ('scheduled__1')")


def _scheduler_writes(path: Path, run_id: str) -> None:
    with _engine(path).begin() as connection:
        connection.exec_driver_sql(f"INSERT INTO dag_run VALUES ('{run_id}')")


def _read_then_write(session, path: Path, while_reading) -> None:
    """What ``backfill create`` does per day: inside a savepoint, read the day's runs, then insert one."""
    with session.begin_nested():
        session.execute(sa.text("SELECT run_id FROM dag_run")).all()
        while_reading()
        session.execute(sa.text("INSERT INTO dag_run VALUES ('backfill__1')"))
    session.commit()


def _run_ids(path: Path) -> list[str]:
    with _engine(path).connect() as connection:
        return sorted(connection.exec_driver_sql("SELECT run_id FROM dag_run").scalars())


def test_a_deferred_transaction_fails_at_once_when_another_process_wrote(tmp_path):
    db = tmp_path / "airflow.db"
    _runs_table(db)
    session = sessionmaker(_engine(db))()
    started = time.monotonic()
    with pytest.raises(OperationalError, match="database is locked"):
        _read_then_write(session, db, lambda: _scheduler_writes(db, "scheduled__2"))
    assert time.monotonic() - started < 4, "failed without waiting: the busy timeout does not apply"
    session.rollback()
    assert _run_ids(db) == ["scheduled__1", "scheduled__2"]


def test_immediate_sessions_let_the_other_writer_wait_and_both_writes_land(tmp_path):
    db = tmp_path / "airflow.db"
    _runs_table(db)
    session = sqlite.immediate_session_maker(_engine(db))()
    scheduler = threading.Thread(target=_scheduler_writes, args=(db, "scheduled__2"))

    def scheduler_writes_meanwhile() -> None:
        scheduler.start()
        time.sleep(0.3)  # the scheduler is now waiting for the lock the CLI holds
        assert scheduler.is_alive()

    _read_then_write(session, db, scheduler_writes_meanwhile)
    scheduler.join(timeout=10)
    assert _run_ids(db) == ["backfill__1", "scheduled__1", "scheduled__2"]


@pytest.mark.parametrize(
    ("command", "immediate"),
    [
        (["backfill", "create", "--dag-id", "d", "--from-date", "2024-03-01"], True),
        (["dags", "trigger", "d"], True),
        (["dags", "unpause", "d"], True),
        (["tasks", "test", "d", "t", "2024-03-01"], True),  # in-process API: short request sessions
        (["dags", "test", "d"], False),
        (["scheduler"], False),
        (["db", "migrate"], False),
    ],
)
def test_which_cli_commands_begin_immediate(command, immediate):
    env = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////x/airflow.db"}
    chosen = for_command(env, command).get("AIRFLOW__DATABASE__SQL_ALCHEMY_SESSION_MAKER")
    assert (chosen == sqlite.SESSION_MAKER) is immediate
    postgres = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://a@127.0.0.1/airflow"}
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_SESSION_MAKER" not in for_command(postgres, command)
