"""The local platform: a real Airflow (api-server, scheduler, dag-processor, triggerer) and a real
``mlflow server`` on loopback, all state under one folder.

``up`` refuses taken ports, migrates the Airflow database, starts each service in its own process
group, waits for each to be healthy, applies ``airflow_settings.yaml`` and prints where everything
is. ``down`` stops exactly the process groups recorded in ``run/stack.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tollgate.config import REPO_ROOT, state_dir
from tollgate.platform import router_service, secrets
from tollgate.platform.processes import (
    ServiceError,
    free_port,
    group_alive,
    http_ok,
    log_tail,
    port_is_free,
    start_group,
    stop_groups,
    wait_healthy,
    wait_listening,
)
from tollgate.platform.supervise import supervised
from tollgate.registry.keys import ensure_dev_keypair

SQLITE_ARGS = "tollgate.platform.sqlite"  # a waiting writer waits a minute, not 5 s
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


@dataclass
class Ports:
    airflow: int = 8080
    mlflow: int = 5000
    worker_log: int = 8793
    trigger_log: int = 8794
    smtp: int = 0  # the local mail server; 0 = a free port chosen by `up`
    router: int = 8000  # the serving router
    # The distributed profile's own services (tollgate/platform/distributed.py); 0 = not in this profile.
    postgres: int = 0
    redis: int = 0
    s3: int = 0
    second_worker_log: int = 0

    @classmethod
    def from_env(cls) -> Ports:
        env = os.environ
        return cls(
            airflow=int(env.get("TOLLGATE_AIRFLOW_PORT", 8080)),
            mlflow=int(env.get("TOLLGATE_MLFLOW_PORT", 5000)),
            worker_log=int(env.get("TOLLGATE_WORKER_LOG_PORT", 8793)),
            trigger_log=int(env.get("TOLLGATE_TRIGGER_LOG_PORT", 8794)),
            smtp=int(env.get("TOLLGATE_SMTP_PORT", 8025)),
            router=int(env.get("TOLLGATE_ROUTER_PORT", 8000)),
        )

    def by_service(self) -> dict[str, int]:
        ports = {
            "airflow api-server": self.airflow,
            "mlflow server": self.mlflow,
            "airflow worker log server": self.worker_log,
            "airflow triggerer log server": self.trigger_log,
            "smtp server (approver mail)": self.smtp,
            "serving router": self.router,
            "postgresql": self.postgres,
            "redis": self.redis,
            "s3 (moto_server)": self.s3,
            "second celery worker log server": self.second_worker_log,
        }
        return {name: port for name, port in ports.items() if port}


@dataclass
class Service:
    name: str
    pgid: int
    started: float
    log: str


@dataclass
class StackState:
    home: str
    ports: Ports
    services: list[Service] = field(default_factory=list)
    profile: str = "default"


class LocalStack:
    """One local platform rooted at ``home`` (default: the state folder).

    The hooks below (``profile``, ``airflow_components``, ``_start_backing_services``, ...) are what the
    distributed profile (``tollgate.platform.distributed.DistributedStack``) changes; here they keep the
    default profile: SQLite, LocalExecutor, local folders."""

    profile = "default"

    def __init__(
        self,
        home: Path | None = None,
        ports: Ports | None = None,
        parallelism: int = 4,
        dag_refresh_seconds: int = 20,
    ):
        self.home = (home or state_dir()).resolve()
        self.ports = ports or Ports.from_env()
        self.parallelism = parallelism
        self.dag_refresh_seconds = dag_refresh_seconds  # how often the dag-processor looks for new files
        # Seconds each service may take to become healthy (a loaded laptop or CI runner can be slow).
        self.startup_timeout = float(os.environ.get("TOLLGATE_STARTUP_TIMEOUT", 300))
        self.logs = self.home / "logs"
        self.run_file = self.home / "run" / "stack.json"

    # ---- addresses -------------------------------------------------------------------------
    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.airflow}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.mlflow}"

    def passwords(self) -> dict[str, str]:
        return secrets.ensure_passwords(self.home / "airflow" / "passwords.json")

    # ---- environment -----------------------------------------------------------------------
    def airflow_env(self) -> dict[str, str]:
        """The environment every Airflow component (and every task) runs with."""
        airflow_home = self.home / "airflow"
        secret_dir = airflow_home / "secrets"
        env = dict(os.environ)
        env.update(
            {
                "TOLLGATE_HOME": str(self.home),
                "AIRFLOW_HOME": str(airflow_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__FERNET_KEY": secrets.ensure_fernet_key(secret_dir / "fernet_key"),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                    f"{user}:{role}" for user, role in secrets.USERS.items()
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{SQLITE_ARGS}.CONNECT_ARGS",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{SQLITE_ARGS}.CONNECT_ARGS_ASYNC",
                "AIRFLOW__API__BASE_URL": self.airflow_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.ports.airflow),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.ensure_token(secret_dir / "api_secret_key"),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.ensure_token(secret_dir / "jwt_secret"),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports.worker_log),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports.trigger_log),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(self.dag_refresh_seconds),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                # How often expired approval requests are resolved (their default, Reject, applies).
                "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
                "MLFLOW_TRACKING_URI": self.mlflow_url,
                "TOLLGATE_ROUTER_URL": f"http://127.0.0.1:{self.ports.router}",  # the rollout stages' router
                "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "http", "host": self.mlflow_url}),
                "GIT_PYTHON_REFRESH": "quiet",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )
        # An idle scheduler loop sleeps this long before it looks again: each step of a run (a task ending,
        # its downstream being scheduled, a join of empty tasks) waits for one such look. Airflow's 1 s adds
        # about a second per step, a minute over the demo's runs; a quarter second costs an idle loop of a
        # few SQLite queries four times a second. Set in the environment to choose another.
        env.setdefault("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", "0.25")
        if "AIRFLOW_CONN_TOLLGATE_AIRFLOW_SERVICE" not in os.environ:  # ends superseded evaluation runs
            env["AIRFLOW_CONN_TOLLGATE_AIRFLOW_SERVICE"] = json.dumps(
                {"conn_type": "http", "host": self.airflow_url, "login": secrets.SERVICE,
                 "password": self.passwords()[secrets.SERVICE]}
            )  # fmt: skip
        if "AIRFLOW_CONN_SMTP_DEFAULT" not in os.environ:  # approver mail: the local SMTP server
            env["AIRFLOW_CONN_SMTP_DEFAULT"] = json.dumps(
                {"conn_type": "smtp", "host": "127.0.0.1", "port": self.ports.smtp,
                 "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "tollgate@localhost",
                           "retry_limit": 1, "timeout": 10}}
            )  # fmt: skip
        if "AIRFLOW_CONN_TOLLGATE_SIGNING" not in os.environ:  # model signing key: a development pair
            keys = ensure_dev_keypair(self.home)  # made once under <state>/keys/, never committed
            env["AIRFLOW_CONN_TOLLGATE_SIGNING"] = json.dumps(
                {"conn_type": "generic", "extra": {"private_key_path": str(keys.private_key)}}
            )
        env.update(self._decision_env())
        return env

    def _decision_env(self) -> dict[str, str]:
        """The decision key (signs approvals; read only by promote/rollback), its public key pinned as
        an environment Variable (the UI cannot change it), and the read-only account promote uses to
        read Airflow's own approval records. Each is defined in the environment, where the UI and REST
        API cannot override it."""
        from tollgate.registry.keys import DEV_DECISION_PRIVATE_KEY, DEV_DECISION_PUBLIC_KEY

        env: dict[str, str] = {}
        if "AIRFLOW_CONN_TOLLGATE_DECISION" not in os.environ:
            keys = ensure_dev_keypair(self.home, DEV_DECISION_PRIVATE_KEY, DEV_DECISION_PUBLIC_KEY)
            env["AIRFLOW_CONN_TOLLGATE_DECISION"] = json.dumps(
                {"conn_type": "generic", "extra": {"private_key_path": str(keys.private_key)}}
            )
            env["AIRFLOW_VAR_TOLLGATE_DECISION_PUBLIC_KEYS"] = str(keys.public_key)
        if "AIRFLOW_CONN_TOLLGATE_AIRFLOW_API" not in os.environ:
            env["AIRFLOW_CONN_TOLLGATE_AIRFLOW_API"] = json.dumps(
                {
                    "conn_type": "http",
                    "host": self.airflow_url,
                    "login": secrets.AUDITOR,
                    "password": self.passwords()[secrets.AUDITOR],
                }
            )
        return env

    def _start_router(self, env: dict[str, str], state: StackState):
        """Start the serving router (it waits for a verified champion by itself)."""
        log = self.logs / "tollgate-router.log"
        router_env = router_service.router_env(self.home, self.ports.router, self.mlflow_url, env)
        proc = start_group(router_service.router_command(), log, env=router_env)
        state.services.append(Service(router_service.SERVICE_NAME, proc.pid, time.time(), str(log)))
        self._write_state(state)
        return proc, log

    def _airflow_bin(self) -> str:
        return str(Path(sys.executable).with_name("airflow"))

    def _airflow_command(self, component: str) -> list[str]:
        if component == "scheduler":  # its LocalExecutor forks every task: libraries imported once
            return [sys.executable, "-m", "tollgate.platform.preload", component]
        return [self._airflow_bin(), component]

    @property
    def mailbox(self) -> Path:
        """The Maildir the local SMTP server writes every message to (what approvers would receive)."""
        return self.home / "mail"

    def _smtp_command(self) -> list[str]:
        return [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.ports.smtp}",
                "-c", "aiosmtpd.handlers.Mailbox", str(self.mailbox)]  # fmt: skip

    def _mlflow_command(self) -> list[str]:
        mlflow_home = self.home / "mlflow"
        return [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host", "127.0.0.1",
            "--port", str(self.ports.mlflow),
            "--workers", "1",
            "--backend-store-uri", f"sqlite:///{mlflow_home / 'mlflow.db'}",
            "--artifacts-destination", str(mlflow_home / "artifacts"),
            "--serve-artifacts",
        ]  # fmt: skip

    # ---- lifecycle -------------------------------------------------------------------------
    def read_state(self) -> StackState | None:
        if not self.run_file.exists():
            return None
        raw = json.loads(self.run_file.read_text())
        return StackState(
            home=raw["home"],
            ports=Ports(**raw["ports"]),
            services=[Service(**s) for s in raw["services"]],
            profile=raw.get("profile", "default"),
        )

    def _write_state(self, state: StackState) -> None:
        self.run_file.parent.mkdir(parents=True, exist_ok=True)
        self.run_file.write_text(json.dumps(asdict(state), indent=2))

    def running_services(self) -> list[Service]:
        state = self.read_state()
        return [s for s in state.services if group_alive(s.pgid)] if state else []

    def _check_ports(self) -> None:
        taken = [
            f"{name} port {port}" for name, port in self.ports.by_service().items() if not port_is_free(port)
        ]
        if taken:
            raise ServiceError(
                "Cannot start the local platform: "
                + ", ".join(taken)
                + " already in use by another program. Stop it, or choose other ports with "
                "TOLLGATE_AIRFLOW_PORT / TOLLGATE_MLFLOW_PORT / TOLLGATE_WORKER_LOG_PORT / "
                "TOLLGATE_TRIGGER_LOG_PORT / TOLLGATE_SMTP_PORT / TOLLGATE_ROUTER_PORT."
            )

    def migrate(self) -> None:
        log = self.logs / "airflow-db-migrate.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            result = subprocess.run(
                [self._airflow_bin(), "db", "migrate"],
                env=self.airflow_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if result.returncode != 0:
            raise ServiceError(
                f"airflow database migration failed (exit {result.returncode}).\n"
                f"Log: {log}\n--- last lines ---\n{log_tail(log)}"
            )

    def up(self, announce: bool = True) -> dict[str, float]:
        """Start everything and wait until healthy; return seconds to healthy per service."""
        if self.running_services():
            raise ServiceError(
                f"The local platform in {self.home} is already running "
                f"(Airflow {self.airflow_url}, MLflow {self.mlflow_url}). Run `make down` first."
            )
        if not self.ports.smtp:
            self.ports.smtp = free_port()
        self._check_ports()
        t0 = time.monotonic()
        self.passwords()
        env = self.airflow_env()
        (self.home / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
        state = StackState(home=str(self.home), ports=self.ports, profile=self.profile)
        timings: dict[str, float] = {}
        try:
            self._start_backing_services(state, timings, t0)
            mlflow_log = self.logs / "mlflow-server.log"
            mlflow_proc = start_group(self._mlflow_command(), mlflow_log, env=self._mlflow_env(env))
            state.services.append(Service("mlflow-server", mlflow_proc.pid, time.time(), str(mlflow_log)))
            self._write_state(state)
            smtp_log = self.logs / "smtp-server.log"
            self.mailbox.parent.mkdir(parents=True, exist_ok=True)
            smtp_proc = start_group(self._smtp_command(), smtp_log, env=env)
            state.services.append(Service("smtp-server", smtp_proc.pid, time.time(), str(smtp_log)))
            self._write_state(state)
            router_proc, router_log = self._start_router(env, state)
            self.migrate()
            timings["airflow db migrate"] = time.monotonic() - t0
            procs = {}
            for component in self.airflow_components():
                log = self.logs / f"airflow-{component}.log"
                command = supervised(f"airflow-{component}", self._airflow_command(component))
                proc = start_group(command, log, env=self._component_env(component, env))
                procs[component] = (proc, log)
                state.services.append(Service(f"airflow-{component}", proc.pid, time.time(), str(log)))
                self._write_state(state)
            api_proc, api_log = procs["api-server"]
            wait_healthy(
                "airflow api-server",
                f"{self.airflow_url}/api/v2/monitor/health",
                api_proc,
                api_log,
                self.startup_timeout,
            )
            timings["airflow"] = time.monotonic() - t0
            wait_healthy(
                "mlflow server", f"{self.mlflow_url}/health", mlflow_proc, mlflow_log, self.startup_timeout
            )
            timings["mlflow"] = time.monotonic() - t0
            wait_listening("smtp server", self.ports.smtp, smtp_proc, smtp_log, self.startup_timeout)
            self._wait_components_healthy(procs, self.startup_timeout)
            timings["airflow components"] = time.monotonic() - t0
            self._wait_workers_healthy(procs, timings, t0)
            live = router_service.live_url(self.ports.router)
            wait_healthy("serving router", live, router_proc, router_log, self.startup_timeout)
            timings["router"] = time.monotonic() - t0
            from tollgate.platform.settings import apply_settings

            apply_settings(self, REPO_ROOT / "airflow_settings.yaml")
            timings["settings applied"] = time.monotonic() - t0
        except BaseException:
            self.down(quiet=True)
            raise
        if announce:
            print(self.describe(timings))
        return timings

    # ---- profile hooks (the default profile's behaviour) ---------------------------------------
    def airflow_components(self) -> tuple[str, ...]:
        return AIRFLOW_COMPONENTS

    def _component_env(self, component: str, env: dict[str, str]) -> dict[str, str]:
        return env

    def _mlflow_env(self, env: dict[str, str]) -> dict[str, str]:
        # MLflow's background job runner (GenAI evaluation jobs) is not used by Tollgate.
        return {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

    def _start_backing_services(self, state: StackState, timings: dict[str, float], t0: float) -> None:
        """Services the others need first (none in the default profile: SQLite and folders)."""

    def _wait_workers_healthy(self, procs: dict, timings: dict[str, float], t0: float) -> None:
        """Task workers outside the scheduler (none in the default profile: LocalExecutor)."""

    def settings_overrides(self) -> dict[str, str]:
        """Variables whose ``airflow_settings.yaml`` value this profile replaces (none by default)."""
        return {}

    def _status_lines(self, state: StackState) -> list[str]:
        return []

    def _describe_lines(self) -> list[str]:
        return []

    def _wait_components_healthy(self, procs: dict, timeout: float = 120.0) -> None:
        """Scheduler, dag-processor and triggerer report heartbeats through the health endpoint."""
        from tollgate.platform.api import AirflowClient

        client = AirflowClient(self.airflow_url)
        deadline = time.monotonic() + timeout
        wanted = {"scheduler", "dag_processor", "triggerer"}
        while True:
            for component, (proc, log) in procs.items():
                if proc.poll() is not None:
                    raise ServiceError(
                        f"airflow {component} exited with code {proc.returncode}.\n"
                        f"Log: {log}\n--- last lines ---\n{log_tail(log)}"
                    )
            health = client.health()
            healthy = {k for k in wanted if (health.get(k) or {}).get("status") == "healthy"}
            if healthy == wanted:
                return
            if time.monotonic() > deadline:
                missing = sorted(wanted - healthy)
                logs = ", ".join(str(procs[m.replace("_", "-")][1]) for m in missing)
                raise ServiceError(
                    f"airflow {', '.join(missing)} not healthy after {timeout:.0f} s. Logs: {logs}"
                )
            time.sleep(1)

    def down(self, quiet: bool = False) -> list[str]:
        """Stop exactly the process groups this stack started; return their names."""
        state = self.read_state()
        if state is None:
            if not quiet:
                print(f"Nothing to stop: no platform recorded in {self.run_file}.")
            return []
        running = [s for s in state.services if group_alive(s.pgid)]
        stop_groups([s.pgid for s in running])
        stopped = [s.name for s in running]
        self.run_file.unlink(missing_ok=True)
        if not quiet:
            print("Stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return stopped

    def clean(self) -> str:
        """Stop the platform and delete its state folder (databases, logs, keys, data): an empty state.

        Refuses a folder that does not look like a Tollgate state folder, so a mistyped TOLLGATE_HOME
        never deletes something else.
        """
        import shutil

        if not self.home.exists():
            return f"Nothing to clean: {self.home} does not exist."
        markers = ("airflow", "mlflow", "run", "keys", "logs", "data-repo", "storage", "landing")
        if self.home.name != ".tollgate" and not any((self.home / m).exists() for m in markers):
            raise ServiceError(
                f"{self.home} does not look like a Tollgate state folder (none of {', '.join(markers)} in "
                "it): not deleting it. Check TOLLGATE_HOME."
            )
        self.down(quiet=True)
        shutil.rmtree(self.home)
        return f"Deleted {self.home}: the next `make up` / `make demo` starts from an empty state."

    def status(self) -> str:
        state = self.read_state()
        if state is None:
            return f"Local platform in {self.home}: not running."
        lines = [f"Local platform in {self.home} (profile {state.profile}):"]
        for service in state.services:
            alive = "running" if group_alive(service.pgid) else "STOPPED"
            lines.append(f"  {service.name:<24} {alive:<8} pgid {service.pgid:<8} log {service.log}")
        air = (
            "healthy" if http_ok(f"http://127.0.0.1:{state.ports.airflow}/api/v2/monitor/health") else "down"
        )
        mlf = "healthy" if http_ok(f"http://127.0.0.1:{state.ports.mlflow}/health") else "down"
        live = http_ok(router_service.live_url(state.ports.router))
        ready = http_ok(router_service.ready_url(state.ports.router))
        router = "ready" if ready else ("live, not ready: no verified champion yet" if live else "down")
        lines.append(f"  Airflow UI  http://127.0.0.1:{state.ports.airflow}  ({air})")
        lines.append(f"  MLflow UI   http://127.0.0.1:{state.ports.mlflow}  ({mlf})")
        lines.append(f"  Router      http://127.0.0.1:{state.ports.router}  ({router})")
        lines.extend(self._status_lines(state))
        return "\n".join(lines)

    def describe(self, timings: dict[str, float] | None = None) -> str:
        users = ", ".join(f"{user} ({role})" for user, role in secrets.USERS.items())
        lines = [
            f"Tollgate local platform is up (profile {self.profile}).",
            f"  Airflow UI : {self.airflow_url}   (users: {users}; passwords in the file below)",
            f"  MLflow UI  : {self.mlflow_url}",
            f"  Mail       : smtp://127.0.0.1:{self.ports.smtp} -> {self.mailbox} (what approvers receive)",
            f"  Router     : http://127.0.0.1:{self.ports.router}/predict   (admin token in "
            f"{router_service.admin_token_path(self.home)})",
            f"  Passwords  : {self.home / 'airflow' / 'passwords.json'}",
            f"  State      : {self.home}",
            f"  Logs       : {self.logs}",
            *self._describe_lines(),
        ]
        if timings:
            lines.append("  Healthy after: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
        return "\n".join(lines)
