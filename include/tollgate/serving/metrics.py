"""Prometheus metrics of one router process (its own registry, so several routers fit in one test).

Histograms keep to ten buckets: ``observe`` is a linear scan over them. Statistics that decide anything
use raw latencies from the prediction log, never these buckets.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "tollgate_router_request_seconds",
            "Predict latency in the router, by arm and version",
            ["variant", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "tollgate_router_requests",
            "Predict requests by arm, version and HTTP status",
            ["variant", "version", "status"],
            registry=r,
        )
        self.errors = Counter(
            "tollgate_router_errors", "Model errors by arm and version", ["variant", "version"], registry=r
        )
        self.shadow_depth = Gauge("tollgate_router_shadow_queue_depth", "Shadow items waiting", registry=r)
        self.shadow_dropped = Counter(
            "tollgate_router_shadow_dropped", "Shadow items dropped because the queue was full", registry=r
        )
        self.shadow_done = Counter(
            "tollgate_router_shadow_predictions", "Shadow predictions by status", ["status"], registry=r
        )
        self.model_info = Gauge(
            "tollgate_router_model_info",
            "Loaded model versions (1 = loaded)",
            ["alias", "model", "version", "signature_sha256"],
            registry=r,
        )
        self.refusals = Counter(
            "tollgate_router_verification_refusals",
            "Model versions refused (verification or approval)",
            ["alias", "version"],
            registry=r,
        )
        self.reloads = Counter(
            "tollgate_router_reloads", "Routing table swaps by outcome", ["outcome"], registry=r
        )
        self.aborts = Counter(
            "tollgate_router_rollout_aborts", "Rollouts aborted by this router", ["cause"], registry=r
        )
        self.ready = Gauge("tollgate_router_ready", "1 when a verified champion is served", registry=r)
        self.log_rows = Counter(
            "tollgate_router_prediction_log_rows", "Rows written to the prediction log", registry=r
        )

        self._served: dict[tuple[str, str], tuple[Any, Any]] = {}

    def served(self, variant: str, version: str) -> tuple[Any, Any]:
        """The latency histogram and the 200-counter children of one arm and version, looked up once:
        ``.labels()`` hashes its label values under a lock on every call, the request path needs neither."""
        children = self._served.get((variant, version))
        if children is None:
            children = (self.latency.labels(variant, version), self.requests.labels(variant, version, "200"))
            self._served[(variant, version)] = children
        return children

    def render(self) -> bytes:
        return generate_latest(self.registry)
