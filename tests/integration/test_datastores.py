"""PostgreSQL and Redis of the distributed profile, for real: installed from Debian when missing, started on
loopback (PostgreSQL as the ``postgres`` user when the tests run as root), healthy by a real query,
password-protected, and gone after their process groups are stopped."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tollgate.platform.datastores import Postgres, Redis, as_service_user, ensure_debian_packages
from tollgate.platform.processes import free_port, port_is_free, stop_group

pytestmark = pytest.mark.integration


@pytest.fixture
def root_dir():
    # PostgreSQL runs as another user when the tests run as root: its folders must be reachable by it.
    path = Path(tempfile.mkdtemp(prefix="tollgate-datastores-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_postgres_and_redis_start_answer_and_stop(root_dir):
    import psycopg
    import redis

    ensure_debian_packages()
    pg = Postgres(root_dir / "pg", free_port(), root_dir / "logs" / "pg.log", root_dir / "secrets" / "pg")
    rd = Redis(
        root_dir / "redis", free_port(), root_dir / "logs" / "redis.log", root_dir / "secrets" / "redis"
    )
    pg_proc = pg.start()
    try:
        rd_proc = rd.start()
        try:
            pg.create_database("airflow")
            pg.create_database("airflow")  # a second `make up` finds it
            with psycopg.connect(pg.url("airflow", driver="postgresql")) as conn:
                owner = conn.execute("SELECT current_user, current_database()").fetchone()
            assert owner == ("tollgate", "airflow")
            if os.geteuid() == 0:  # the server is not root's
                assert (root_dir / "pg").stat().st_uid != 0
                assert as_service_user(["postgres"])[:3] == ["runuser", "-u", "postgres"]
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(f"postgresql://tollgate:wrong@127.0.0.1:{pg.port}/airflow", connect_timeout=3)
            assert redis.Redis.from_url(rd.url()).ping() is True
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(host="127.0.0.1", port=rd.port, password="wrong").ping()
            assert oct((root_dir / "secrets" / "pg").stat().st_mode & 0o777) == "0o600"
        finally:
            stop_group(rd_proc.pid)
    finally:
        stop_group(pg_proc.pid)
    assert port_is_free(pg.port) and port_is_free(rd.port)
