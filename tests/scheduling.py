"""How ``make test`` hands test modules to its pytest-xdist workers.

Each worker that runs a module needing the local platform starts one (Airflow api-server, scheduler,
dag-processor, triggerer, MLflow: about a minute and 50 CPU seconds on two cores). Plain
``--dist loadfile`` lets every worker pick such a module, and the last one to do so often starts a
whole platform for a single short module near the end. Here the platform modules stay on at most
``PLATFORM_WORKERS`` workers; the other workers run everything else and stop when only platform modules
are left.

Which module goes first matters as much: xdist's own order (most tests first) put the long platform
chains last, so the suite ended on one of them. Here the modules in ``LONGEST_FIRST`` (measured in a full
run, longest first) are handed out before the rest: the longest chain starts at once, the short modules
fill in around it. ``test_distributed_profile.py`` starts a platform of its own (PostgreSQL, Celery),
not the local one, so it runs on a worker without the local platform.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from xdist.scheduler import LoadFileScheduling

PLATFORM_WORKERS = 2
# Seconds in a full `make test` (3 workers, 2 cores), for the order only: a module not listed goes after.
LONGEST_FIRST = (
    "tests/integration/test_rollout_dag.py",  # ~810 s
    "tests/integration/test_promotion_dag.py",  # ~470 s
    "tests/integration/test_distributed_profile.py",  # ~250 s, its own platform
    "tests/integration/test_airflow_cli.py",  # ~240 s
    "tests/integration/test_digits_example.py",  # ~170 s
    "tests/integration/test_ingest_sqs.py",  # ~140 s
    "tests/e2e/test_approval_in_browser.py",
    "tests/integration/test_training_resume.py",
    "tests/unit/test_serving_units.py",
)


def rank(scope: str) -> int:
    """Where a module (its scope: a path relative to the rootdir) comes in the hand-out order."""
    path = scope.split("::", 1)[0]
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


ROOT = Path(__file__).resolve().parents[1]


@cache
def needs_platform(scope: str, fixtures: frozenset[str]) -> bool:
    """Whether the module at ``scope`` (a path relative to the rootdir) asks for a platform fixture."""
    path = ROOT / scope.split("::", 1)[0]
    try:
        text = path.read_text()
    except OSError:
        return False
    return re.search(r"\b(" + "|".join(sorted(fixtures)) + r")\b", text) is not None


class PlatformOnFewWorkers(LoadFileScheduling):
    def __init__(self, config, log=None, fixtures: frozenset[str] = frozenset()) -> None:
        super().__init__(config, log)
        self.fixtures = fixtures
        self.platform_nodes: list = []

    def _is_platform(self, scope: str) -> bool:
        return needs_platform(scope, self.fixtures)

    def _assign_work_unit(self, node) -> None:
        # A worker that crashed is no platform worker any more: another may take its modules.
        self.platform_nodes = [n for n in self.platform_nodes if n in self.assigned_work]
        queued = sorted(self.workqueue, key=rank)  # stable: unlisted modules keep xdist's order
        platform = [s for s in queued if self._is_platform(s)]
        others = [s for s in queued if not self._is_platform(s)]
        if platform and (node in self.platform_nodes or len(self.platform_nodes) < PLATFORM_WORKERS):
            if node not in self.platform_nodes:
                self.platform_nodes.append(node)
            scope = platform[0]
        elif others:
            scope = others[0]
        else:  # only platform modules left, and they belong to the platform workers
            if not self.assigned_work.get(node) or self._pending_of(self.assigned_work[node]) == 0:
                node.shutdown()
            return
        self.workqueue.move_to_end(scope, last=False)
        super()._assign_work_unit(node)
