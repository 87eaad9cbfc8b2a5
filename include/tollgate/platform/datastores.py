"""PostgreSQL and Redis on loopback for the distributed profile (``tollgate.platform.distributed``).

Both come from Debian (``postgresql``, ``redis-server``), installed with apt when missing. PostgreSQL refuses
to run as root, so when Tollgate runs as root the server and its tools run as the ``postgres`` user
(``runuser``) on a data folder that user owns; as any other user they run as that user. Each server is
started as its own process group (stopped with the rest of the platform) with a generated password kept
in the state folder (mode 0600), and is healthy when it answers a real query (``SELECT 1``, ``PING``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tollgate.platform.processes import ServiceError, start_group, wait_listening

DEBIAN_PACKAGES = {"postgresql": "/usr/lib/postgresql", "redis-server": "redis-server"}
SUPERUSER = "tollgate"


def _installed(probe: str) -> bool:
    return Path(probe).exists() if probe.startswith("/") else shutil.which(probe) is not None


def ensure_debian_packages(packages: dict[str, str] = DEBIAN_PACKAGES) -> list[str]:
    """Install the missing packages with apt (as root); return what was installed."""
    missing = [name for name, probe in packages.items() if not _installed(probe)]
    if not missing:
        return []
    if os.geteuid() != 0:
        raise ServiceError(
            f"The distributed profile needs the Debian packages {' '.join(missing)}: install them with "
            f"`sudo apt-get install -y {' '.join(missing)}` and run again."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env
    )
    return missing


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian keeps one per major version)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise ServiceError("PostgreSQL is not installed: `apt-get install -y postgresql`.")
    return versions[-1]


def as_service_user(command: list[str], user: str = "postgres") -> list[str]:
    """Root runs ``command`` as ``user`` (PostgreSQL refuses root); anyone else runs it as themselves."""
    return ["runuser", "-u", user, "--", *command] if os.geteuid() == 0 else command


def _secret(path: Path) -> str:
    """A generated password, made once and kept (mode 0600)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    path.write_text(value)
    path.chmod(0o600)
    return value


@dataclass
class Postgres:
    data_dir: Path
    port: int
    log: Path
    password_file: Path

    @property
    def password(self) -> str:
        return _secret(self.password_file)

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _give_to_postgres(self, *paths: Path) -> None:
        if os.geteuid() == 0:
            for path in paths:
                shutil.chown(path, "postgres", "postgres")

    def init(self) -> None:
        """initdb once: password login (scram) only, on loopback only."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._give_to_postgres(self.data_dir, pwfile)
        try:
            subprocess.run(
                as_service_user([str(postgres_bin() / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                                 "--pwfile", str(pwfile), "-A", "scram-sha-256", "-E", "UTF8"]),
                check=True, capture_output=True, text=True,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise ServiceError(f"initdb failed for {self.data_dir}:\n{exc.stdout}\n{exc.stderr}") from exc
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self, on_started: Callable[[subprocess.Popen], None] | None = None) -> subprocess.Popen:
        """Start; wait until a query answers. ``on_started`` gets the process first (to record it)."""
        self.init()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            str(postgres_bin() / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data_dir}",
        ]  # fmt: skip
        process = start_group(as_service_user(command), self.log)
        if on_started:
            on_started(process)
        wait_listening("postgresql", self.port, process, self.log)
        self.wait_ready()
        return process

    def wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres", driver="postgresql"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError as exc:  # starting up ("the database system is starting up")
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"postgresql not ready on port {self.port}: {exc}. Log: {self.log}"
                    ) from exc
                time.sleep(0.3)

    def create_database(self, name: str) -> None:
        """CREATE DATABASE unless it exists (the metadata DB of Airflow, MLflow's backend store)."""
        import psycopg

        with psycopg.connect(self.url("postgres", driver="postgresql"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')


@dataclass
class Redis:
    data_dir: Path
    port: int
    log: Path
    password_file: Path

    @property
    def password(self) -> str:
        return _secret(self.password_file)

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def start(self, on_started: Callable[[subprocess.Popen], None] | None = None) -> subprocess.Popen:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed: `apt-get install -y redis-server`.")
        # The password on the command line would show in `ps`: pass it in a config file (mode 0600).
        config = self.data_dir / "redis.conf"
        config.write_text(
            f'bind 127.0.0.1\nport {self.port}\ndir {self.data_dir}\nsave ""\nappendonly no\n'
            f"protected-mode yes\nrequirepass {self.password}\n"
        )
        config.chmod(0o600)
        process = start_group([binary, str(config)], self.log)
        if on_started:
            on_started(process)
        wait_listening("redis-server", self.port, process, self.log)
        import redis

        redis.Redis.from_url(self.url()).ping()
        return process
