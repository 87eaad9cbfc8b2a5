"""How ``make test`` hands test modules to its pytest-xdist workers.

Each worker that runs a module needing the local platform starts one (Airflow api-server, scheduler,
dag-processor, triggerer, MLflow: about a minute and 50 CPU seconds on two cores). Plain
``--dist loadfile`` lets every worker pick such a module, and the last one to do so often starts a
whole platform for a single short module near the end. Here the platform modules stay on at most
``PLATFORM_WORKERS`` workers; the other workers run everything else and stop when only platform modules
are left.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from xdist.scheduler import LoadFileScheduling

PLATFORM_WORKERS = 2
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
        platform = [s for s in self.workqueue if self._is_platform(s)]
        others = [s for s in self.workqueue if not self._is_platform(s)]
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
