"""Every setting of the router, read from ``TOLLGATE_*`` environment variables with visible defaults.

The same variables configure the local process (``make up`` sets them) and a pod (Deployment env), so
moving between the two is configuration, never a code edit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tollgate.config import default_for, mlflow_tracking_uri, state_dir

ENV_PREFIX = "TOLLGATE_ROUTER_"


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name) or default


def parse_cpus(text: str, name: str) -> frozenset[int]:
    """CPU numbers from a list like ``taskset -c`` takes ("1", "0,2-3"); empty text: none."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            first, last = 0, -1
        if first < 0 or last < first:
            raise ValueError(f"{name}={text!r}: {part!r} is not a CPU number or range; write e.g. 1 or 2-3,6")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def admin_token_path(home: Path | None = None) -> Path:
    """Where ``make up`` writes the admin bearer token (the platform's secrets folder)."""
    return (home or state_dir()) / "airflow" / "secrets" / "router_admin_token"


@dataclass(frozen=True)
class GuardrailLimits:
    """Hard limits on the canary arm over a recent window; a breach aborts the canary at once."""

    window_s: float = 30.0
    min_requests: int = 20  # fewer canary requests in the window decide nothing
    max_error_rate: float = 0.05
    max_p99_ms: float = 250.0


@dataclass(frozen=True)
class RouterSettings:
    model_name: str
    tracking_uri: str
    storage_root: str
    model_cache: Path
    admin_token_file: Path
    trusted_keys: str | None = None  # None: the configured default (TOLLGATE_TRUSTED_PUBLIC_KEYS / dev key)
    decision_keys: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    alias_poll_s: float = 10.0  # how often the champion alias is looked up
    rollout_poll_s: float = 2.0  # how often the shared rollout record is read
    log_flush_s: float = 5.0  # prediction log flush interval
    shadow_queue_size: int = 1000  # shadow requests awaiting their answer; more are dropped, counted
    shadow_batch_size: int = 32  # queued shadow requests answered by one challenger predict (1: one by one)
    shadow_linger_s: float = 0.05  # the worker's one sleep after a batch's first request
    shadow_idle_priority: bool = False  # SCHED_IDLE for the shadow worker instead of nice 10
    # CPUs the shadow worker may run on ("1", "2-3,6"); empty: the router's own. A core of its own keeps the
    # challenger's work off the router's (give the pod that core while it shadows).
    shadow_cpus: frozenset[int] = frozenset()
    default_lease_s: float = 300.0
    guardrail: GuardrailLimits = field(default_factory=GuardrailLimits)

    @classmethod
    def from_env(cls) -> RouterSettings:
        home = state_dir()
        return cls(
            model_name=_env("MODEL", default_for("tollgate_registered_model")),
            tracking_uri=mlflow_tracking_uri(),
            storage_root=os.environ.get("TOLLGATE_STORAGE_ROOT") or default_for("tollgate_storage_root"),
            model_cache=Path(_env("MODEL_CACHE", str(home / "serving" / "models"))),
            admin_token_file=Path(_env("ADMIN_TOKEN_FILE", str(admin_token_path(home)))),
            trusted_keys=os.environ.get("TOLLGATE_TRUSTED_PUBLIC_KEYS") or None,
            decision_keys=os.environ.get("TOLLGATE_DECISION_PUBLIC_KEYS")
            or default_for("tollgate_decision_public_keys"),
            host=_env("HOST", "127.0.0.1"),
            port=int(_env("PORT", "8000")),
            alias_poll_s=float(_env("ALIAS_POLL_SECONDS", "10")),
            rollout_poll_s=float(_env("ROLLOUT_POLL_SECONDS", "2")),
            log_flush_s=float(_env("LOG_FLUSH_SECONDS", "5")),
            shadow_queue_size=int(_env("SHADOW_QUEUE_SIZE", "1000")),
            shadow_batch_size=int(_env("SHADOW_BATCH_SIZE", "32")),
            shadow_linger_s=float(_env("SHADOW_LINGER_SECONDS", "0.05")),
            shadow_idle_priority=_env("SHADOW_IDLE_PRIORITY", "false").lower() in ("1", "true", "yes"),
            shadow_cpus=parse_cpus(_env("SHADOW_CPUS", ""), ENV_PREFIX + "SHADOW_CPUS"),
            default_lease_s=float(_env("DEFAULT_LEASE_SECONDS", "300")),
            guardrail=GuardrailLimits(
                window_s=float(_env("GUARDRAIL_WINDOW_SECONDS", "30")),
                min_requests=int(_env("GUARDRAIL_MIN_REQUESTS", "20")),
                max_error_rate=float(_env("GUARDRAIL_MAX_ERROR_RATE", "0.05")),
                max_p99_ms=float(_env("GUARDRAIL_MAX_P99_MS", "250")),
            ),
        )

    def admin_token(self) -> str:
        """The admin bearer token (``TOLLGATE_ROUTER_ADMIN_TOKEN`` or the token file); "" = admin disabled."""
        if os.environ.get(ENV_PREFIX + "ADMIN_TOKEN"):
            return os.environ[ENV_PREFIX + "ADMIN_TOKEN"].strip()
        try:
            return self.admin_token_file.read_text().strip()
        except OSError:
            return ""
