"""The distributed profile of the local platform (``make up PROFILE=distributed``): the production engines
on loopback.

- PostgreSQL (Debian's, run as the ``postgres`` user when root) holds Airflow's metadata database, MLflow's
  backend store and MLflow's user store;
- Redis is the Celery broker and result backend; Airflow runs the **CeleryExecutor** with two
  ``airflow celery worker`` processes (Celery hostnames ``tollgate-worker-1@…``/``-2@…``, each with its own
  log-server port and pid file);
- ``moto_server`` is the S3 endpoint for landing, storage, the DVC remote and MLflow's artifacts (bucket
  ``tollgate``); it keeps objects in memory, so they last as long as the platform runs;
- MLflow runs its ``basic-auth`` app: nobody may read or write without an account. The admin account is
  generated once under ``<state>/secrets/`` (mode 0600) and given to tasks and the router as
  ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``; nothing prints it.

Every service is a process group recorded in ``run/stack.json``, health-checked by a real request (SQL
``SELECT 1``, Redis ``PING``, S3 ``ListBuckets``, a Celery ``ping`` answered by each worker) and stopped by
``make down`` like the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from secrets import token_urlsafe

from tollgate.config import REPO_ROOT
from tollgate.platform import secrets
from tollgate.platform.datastores import Postgres, Redis, ensure_debian_packages
from tollgate.platform.processes import (
    ServiceError,
    free_port,
    group_alive,
    log_tail,
    start_group,
    wait_healthy,
)
from tollgate.platform.stack import LocalStack, Ports, Service, StackState

PROFILE = "distributed"
WORKERS = ("celery-worker-1", "celery-worker-2")
BUCKET = "tollgate"
# moto_server accepts any key pair; these name the local endpoint's account, they guard nothing.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "tollgate-local", "AWS_SECRET_ACCESS_KEY": "tollgate-local",
                  "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
MLFLOW_ADMIN = "admin"
DATABASES = ("airflow", "mlflow", "mlflow_auth")


def distributed_ports() -> Ports:
    """The default profile's ports plus the distributed services' (each overridable like the others)."""
    ports = Ports.from_env()
    env = os.environ
    ports.postgres = int(env.get("TOLLGATE_POSTGRES_PORT", 5432))
    ports.redis = int(env.get("TOLLGATE_REDIS_PORT", 6379))
    ports.s3 = int(env.get("TOLLGATE_S3_PORT", 9000))
    ports.second_worker_log = int(env.get("TOLLGATE_SECOND_WORKER_LOG_PORT", 8795))
    return ports


class DistributedStack(LocalStack):
    """``LocalStack`` on PostgreSQL, Redis + CeleryExecutor (two workers), S3 (moto) and MLflow with auth."""

    profile = PROFILE

    def __init__(self, home: Path | None = None, ports: Ports | None = None, **kwargs) -> None:
        if ports is None:  # a running platform's own ports (status, down), else the configured ones
            recorded = LocalStack(home=home, ports=Ports()).read_state()
            ports = recorded.ports if recorded and recorded.profile == PROFILE else distributed_ports()
        super().__init__(home=home, ports=ports, **kwargs)
        for name in ("postgres", "redis", "s3", "second_worker_log"):  # a Ports without them: free ones
            if not getattr(self.ports, name):
                setattr(self.ports, name, free_port())
        self.secret_dir = self.home / "secrets"
        self.postgres = Postgres(
            self.home / "postgres" / "data", self.ports.postgres, self.logs / "postgresql.log",
            self.secret_dir / "postgres-password",
        )  # fmt: skip
        self.redis = Redis(
            self.home / "redis",
            self.ports.redis,
            self.logs / "redis-server.log",
            self.secret_dir / "redis-password",
        )

    # ---- addresses and secrets ---------------------------------------------------------------
    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    @property
    def mlflow_credentials_file(self) -> Path:
        return self.secret_dir / "mlflow-admin.json"

    def mlflow_credentials(self) -> dict[str, str]:
        """MLflow's admin account ``{"username", "password"}``: generated once, kept (mode 0600)."""
        path = self.mlflow_credentials_file
        if path.exists():
            return json.loads(path.read_text())
        creds = {"username": MLFLOW_ADMIN, "password": token_urlsafe(18)}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)  # private before anything is written to it
        path.write_text(json.dumps(creds, indent=2))
        return creds

    def client_env(self) -> dict[str, str]:
        """What a client process on this machine (``make demo``) needs to reach MLflow and S3."""
        env = self.airflow_env()
        names = (
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "AWS_ENDPOINT_URL",
            "MLFLOW_S3_ENDPOINT_URL",
        )
        return {name: env[name] for name in (*names, *S3_CREDENTIALS)}

    def settings_overrides(self) -> dict[str, str]:
        base = f"s3://{BUCKET}"
        return {
            "tollgate_landing_uri": f"{base}/landing",
            "tollgate_storage_root": f"{base}/storage",
            "tollgate_dvc_remote": f"{base}/dvc-remote",
            # Nothing upstream writes to this local S3: the built-in generator lands the partitions.
            "tollgate_simulate_upstream": "true",
        }

    # ---- environment -------------------------------------------------------------------------
    def airflow_env(self) -> dict[str, str]:
        env = super().airflow_env()
        creds = self.mlflow_credentials()
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url("airflow"),
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url(0),
                "AIRFLOW__CELERY__RESULT_BACKEND": self.redis.url(1),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                # Two workers on one machine: each task is picked by whichever is free.
                "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
                "AWS_ENDPOINT_URL": self.s3_url,
                "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
                **S3_CREDENTIALS,
                "MLFLOW_TRACKING_USERNAME": creds["username"],
                "MLFLOW_TRACKING_PASSWORD": creds["password"],
            }
        )
        for name in (
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC",
        ):
            env.pop(name, None)  # SQLite's busy timeout: not for PostgreSQL
        return env

    def _component_env(self, component: str, env: dict[str, str]) -> dict[str, str]:
        if component == WORKERS[1]:  # its own log server: both run on this machine
            return {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports.second_worker_log)}
        return env

    def airflow_components(self) -> tuple[str, ...]:
        return (*super().airflow_components(), *WORKERS)

    def _airflow_command(self, component: str) -> list[str]:
        if component in WORKERS:  # Celery forks its pool, and each pool process forks the tasks: libraries
            return [  # imported in the worker first are there in every task (tollgate/platform/preload.py)
                sys.executable, "-m", "tollgate.platform.preload", "celery", "worker",
                "--celery-hostname", f"tollgate-{component.removeprefix('celery-')}@%h",
                "--pid", str(self.home / "run" / f"{component}.pid"), "--concurrency", "2",
                "--without-mingle", "--without-gossip",
            ]  # fmt: skip
        return super()._airflow_command(component)

    def _start_router(self, env: dict[str, str], state: StackState):
        """The router writes its prediction log where the rollout stages read it: the profile's S3 storage
        root (the same as Variable ``tollgate_storage_root``), unless the environment names another."""
        storage = {"TOLLGATE_STORAGE_ROOT": self.settings_overrides()["tollgate_storage_root"]}
        return super()._start_router({**storage, **env}, state)

    def _mlflow_auth_config(self) -> Path:
        """docker/mlflow/basic_auth.ini with the user store in PostgreSQL (written 0600: it holds its URL)."""
        template = (REPO_ROOT / "docker" / "mlflow" / "basic_auth.ini").read_text()
        lines = [
            f"database_uri = {self.postgres.url('mlflow_auth')}" if line.startswith("database_uri") else line
            for line in template.splitlines()
        ]
        path = self.home / "mlflow" / "basic_auth.ini"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    def _mlflow_command(self) -> list[str]:
        return [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--app-name", "basic-auth",
            "--host", "127.0.0.1",
            "--port", str(self.ports.mlflow),
            "--workers", "1",
            "--artifacts-destination", f"s3://{BUCKET}/mlflow-artifacts",
            "--serve-artifacts",
        ]  # fmt: skip

    def _mlflow_env(self, env: dict[str, str]) -> dict[str, str]:
        creds = self.mlflow_credentials()
        server_env = {
            **super()._mlflow_env(env),
            # The store's URL holds its password: in the environment, not on the command line (`ps`).
            "MLFLOW_BACKEND_STORE_URI": self.postgres.url("mlflow"),
            "MLFLOW_AUTH_CONFIG_PATH": str(self._mlflow_auth_config()),
            "MLFLOW_AUTH_ADMIN_USERNAME": creds["username"],
            "MLFLOW_AUTH_ADMIN_PASSWORD": creds["password"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.ensure_token(self.secret_dir / "mlflow-flask-secret"),
        }
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            server_env.pop(name, None)  # the server needs no client account
        return server_env

    # ---- lifecycle hooks ---------------------------------------------------------------------
    def _record(self, state: StackState, name: str, pid: int, log: Path) -> None:
        state.services.append(Service(name, pid, time.time(), str(log)))
        self._write_state(state)

    def _start_backing_services(self, state: StackState, timings: dict[str, float], t0: float) -> None:
        installed = ensure_debian_packages()
        if installed:
            print(f"Installed Debian packages: {', '.join(installed)}")
        if os.geteuid() == 0:  # PostgreSQL runs as `postgres`: it must reach its data folder
            for folder in (self.home, self.home / "postgres"):
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(folder.stat().st_mode | 0o711)
        moto_log = self.logs / "moto-server.log"
        moto = start_group(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(self.ports.s3)],
            moto_log,
            env={**os.environ, "TOLLGATE_HOME": str(self.home)},
        )
        self._record(state, "moto-s3", moto.pid, moto_log)
        # Each server is recorded before its health wait, so a failed start is still stopped by `down`.
        self.postgres.start(on_started=lambda p: self._record(state, "postgresql", p.pid, self.postgres.log))
        for database in DATABASES:
            self.postgres.create_database(database)
        timings["postgresql"] = time.monotonic() - t0
        self.redis.start(on_started=lambda p: self._record(state, "redis-server", p.pid, self.redis.log))
        timings["redis"] = time.monotonic() - t0
        wait_healthy("moto_server (S3)", f"{self.s3_url}/moto-api/", moto, moto_log, self.startup_timeout)
        self._ensure_bucket()
        timings["s3"] = time.monotonic() - t0

    def _ensure_bucket(self) -> None:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.s3_url, **_boto_credentials())
        if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=BUCKET)

    def celery_ping(self, timeout: float = 2.0) -> set[str]:
        """Celery hostnames of the workers that answer a ``ping`` through the broker right now."""
        from celery import Celery

        app = Celery(broker=self.redis.url(0))
        try:
            replies = app.control.ping(timeout=timeout) or []
        finally:
            app.close()
        return {name for reply in replies for name in reply}

    def _wait_workers_healthy(self, procs: dict, timings: dict[str, float], t0: float) -> None:
        deadline = time.monotonic() + self.startup_timeout
        wanted = {f"tollgate-{w.removeprefix('celery-')}" for w in WORKERS}
        while True:
            for component in WORKERS:
                proc, log = procs[component]
                if proc.poll() is not None:
                    raise ServiceError(
                        f"airflow {component} exited with code {proc.returncode}.\n"
                        f"Log: {log}\n--- last lines ---\n{log_tail(log)}"
                    )
            answered = {name.split("@", 1)[0] for name in self.celery_ping()}
            if wanted <= answered:
                timings["celery workers"] = time.monotonic() - t0
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"celery workers {sorted(wanted - answered)} did not answer a ping within "
                    f"{self.startup_timeout:.0f} s. Logs: {', '.join(str(procs[w][1]) for w in WORKERS)}"
                )
            time.sleep(1)

    def down(self, quiet: bool = False) -> list[str]:
        """Stop everything; PostgreSQL gets a fast shutdown (SIGINT) first: a TERM (its "smart" shutdown)
        would wait for every client to disconnect."""
        state = self.read_state()
        for service in state.services if state else []:
            if service.name == "postgresql" and group_alive(service.pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.pgid, signal.SIGINT)
        return super().down(quiet=quiet)

    # ---- reporting ---------------------------------------------------------------------------
    def health(self) -> dict[str, bool]:
        """Each distributed service answering a real request (used by ``status`` and the tests)."""
        import boto3
        import psycopg
        import redis

        result: dict[str, bool] = {}
        try:
            with psycopg.connect(
                self.postgres.url("airflow", driver="postgresql"), connect_timeout=2
            ) as conn:
                result["postgresql"] = conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.Error:
            result["postgresql"] = False
        try:
            result["redis"] = bool(redis.Redis.from_url(self.redis.url(), socket_timeout=2).ping())
        except redis.RedisError:
            result["redis"] = False
        try:
            s3 = boto3.client("s3", endpoint_url=self.s3_url, **_boto_credentials())
            result["s3"] = BUCKET in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        except Exception:
            result["s3"] = False
        try:
            answered = {name.split("@", 1)[0] for name in self.celery_ping(timeout=1.5)}
        except Exception:
            answered = set()
        for worker in WORKERS:
            result[worker] = f"tollgate-{worker.removeprefix('celery-')}" in answered
        return result

    def _status_lines(self, state: StackState) -> list[str]:
        health = self.health()
        word = {True: "healthy", False: "down"}
        return [
            f"  PostgreSQL  127.0.0.1:{self.ports.postgres}  ({word[health['postgresql']]})",
            f"  Redis       127.0.0.1:{self.ports.redis}  ({word[health['redis']]})",
            f"  S3 (moto)   {self.s3_url}  ({word[health['s3']]})",
            "  Celery      " + ", ".join(f"{w} ({'answers' if health[w] else 'silent'})" for w in WORKERS),
            f"  MLflow auth admin account in {self.mlflow_credentials_file}",
        ]

    def _describe_lines(self) -> list[str]:
        return [
            f"  PostgreSQL : 127.0.0.1:{self.ports.postgres} (airflow, mlflow, mlflow_auth)   Redis: "
            f"127.0.0.1:{self.ports.redis}   S3: {self.s3_url} (bucket {BUCKET})",
            f"  Celery     : {', '.join(WORKERS)} (CeleryExecutor)",
            f"  MLflow auth: basic auth on; admin account in {self.mlflow_credentials_file}; database "
            f"passwords in {self.secret_dir}",
        ]


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def stack_for(profile: str, **kwargs) -> LocalStack:
    """The platform of ``profile`` (``default`` or ``distributed``)."""
    if profile in ("", "default"):
        return LocalStack(**kwargs)
    if profile == PROFILE:
        return DistributedStack(**kwargs)
    raise ServiceError(f"Unknown platform profile {profile!r}: use PROFILE=default or PROFILE=distributed.")
