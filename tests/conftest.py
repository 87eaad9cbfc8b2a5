"""Test set-up shared by every layer.

Airflow reads its configuration when first imported, so the test environment (a private
AIRFLOW_HOME on SQLite, a private TOLLGATE_HOME) is set here, before any test module imports it.
Every test must carry one layer marker (dags, unit, integration, e2e) so a layer can run alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="tollgate-tests-"))

os.environ.setdefault("TOLLGATE_HOME", str(_SESSION_DIR / "state"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_DIR / 'airflow' / 'airflow.db'}"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.platform", "tests.fixtures.models"]

LAYERS = ("dags", "unit", "integration", "e2e")


# Fixtures that stand for a session platform (Airflow + MLflow, started once per test process).
PLATFORM_FIXTURES = {
    "local_platform",
    "admin_client",
    "promotion_dags",
    "signed_challenger",
    "distributed_platform",  # a platform of its own (test_distributed_profile.py)
}


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile`` with the platform modules kept on two workers (see tests/scheduling.py)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from tests.scheduling import PlatformOnFewWorkers

    # The distributed profile's module starts its own platform: it is not held to the local platform workers.
    return PlatformOnFewWorkers(config, log, frozenset(PLATFORM_FIXTURES - {"distributed_platform"}))


def _layer(item: pytest.Item) -> int:
    return next(i for i, layer in enumerate(LAYERS) if item.get_closest_marker(layer))


def _uses_platform(item: pytest.Item) -> bool:
    return bool(PLATFORM_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse unmarked tests; run fast layers first (dags, unit, integration, e2e).

    Under pytest-xdist (``make test`` runs ``-n 3 --dist loadfile``: a module's tests stay in one worker,
    so its fixtures are made once) the modules that drive a platform through real DAG runs, the long
    chains, are handed out first, and the fast layers follow in layer order.
    """
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(m) for m in LAYERS)]
    if unmarked:
        raise pytest.UsageError(
            "Every test needs a layer marker (" + ", ".join(LAYERS) + "); missing on: " + ", ".join(unmarked)
        )
    in_xdist_worker = "PYTEST_XDIST_WORKER" in os.environ
    items.sort(key=lambda item: (not (in_xdist_worker and _uses_platform(item)), _layer(item)))


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.hookimpl(trylast=True)  # after pytest's own sessionfinish has torn down the session fixtures
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's state folder (set TOLLGATE_KEEP_TEST_STATE=1 to keep it for debugging)."""
    if not os.environ.get("TOLLGATE_KEEP_TEST_STATE"):
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)
