"""The spot report of one training run: attempts, preemptions, lost work, checkpoint overhead, cost.

Built from the attempt ledger and the trainer's ``result.json``; priced from the table in
``tollgate.config``. Written to the task log (``format_report``) and to the training run in MLflow
(``log_to_mlflow``: tags, ``spot_*`` metrics, artifact ``spot_report.json``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from tollgate.launch.classify import Outcome
from tollgate.launch.ledger import AttemptLedger

REPORT_ARTIFACT = "spot_report.json"


def steps_redone_from_ledger(ledger: AttemptLedger) -> int:
    """Steps done twice: the last step an interrupted attempt reached minus where the next one resumed."""
    redone = 0
    attempts = [a for a in ledger.attempts if a.finished]
    for previous, following in itertools.pairwise(attempts):
        if previous.last_step is not None and following.resumed_from_step is not None:
            redone += max(0, previous.last_step - following.resumed_from_step)
    return redone


def build_report(
    ledger: AttemptLedger,
    result: Mapping[str, Any] | None,
    *,
    instance_type: str,
    prices: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    """The spot report. Cost: each attempt's wall time at its capacity's hourly price. The on-demand
    comparison prices an uninterrupted run on on-demand capacity, estimated as the billed time scaled to
    the steps such a run needs (steps / steps executed, redone ones included), minus checkpoint restores."""
    if instance_type not in prices:
        raise ValueError(
            f"No price for instance type {instance_type!r}; known: {', '.join(sorted(prices))}. Add it to "
            "INSTANCE_PRICES_USD_PER_HOUR in tollgate/config.py or change tollgate_training_instance_type."
        )
    price = prices[instance_type]
    result = dict(result or {})
    finished = [a for a in ledger.attempts if a.finished]
    billed = sum(a.duration_seconds or 0.0 for a in finished)
    spot_seconds = sum(a.duration_seconds or 0.0 for a in finished if a.capacity == "spot")
    on_demand_seconds = billed - spot_seconds
    cost = (spot_seconds * price["spot"] + on_demand_seconds * price["on_demand"]) / 3600

    steps = int(result.get("steps") or max((a.last_step or 0 for a in finished), default=0))
    ledger_redone = steps_redone_from_ledger(ledger)
    steps_redone = int(result["steps_redone"]) if result.get("steps_redone") is not None else ledger_redone
    restore = float(result.get("checkpoint_restore_seconds_total") or 0.0)
    save = float(result.get("checkpoint_save_seconds_total") or 0.0)
    executed = steps + steps_redone
    uninterrupted = max(0.0, billed * (steps / executed if executed else 1.0) - restore)
    on_demand_cost = uninterrupted * price["on_demand"] / 3600
    savings = on_demand_cost - cost
    return {
        "training_run_id": ledger.training_run_id,
        "attempts": len(finished),
        "preemptions": sum(a.outcome in (Outcome.PREEMPTED, Outcome.LOST) for a in finished),
        "failures": sum(a.outcome == Outcome.FAILED for a in finished),
        "succeeded": bool(finished) and finished[-1].outcome == Outcome.SUCCEEDED,
        "steps": steps,
        "steps_redone": steps_redone,
        "steps_redone_ledger": ledger_redone,
        "checkpoint_save_seconds_total": round(save, 3),
        "checkpoint_restore_seconds_total": round(restore, 3),
        "billed_seconds": round(billed, 3),
        "spot_seconds": round(spot_seconds, 3),
        "on_demand_seconds": round(on_demand_seconds, 3),
        "estimated_uninterrupted_seconds": round(uninterrupted, 3),
        "instance_type": instance_type,
        "price_spot_usd_per_hour": price["spot"],
        "price_on_demand_usd_per_hour": price["on_demand"],
        "cost_usd": round(cost, 6),
        "on_demand_cost_usd": round(on_demand_cost, 6),
        "savings_usd": round(savings, 6),
        "savings_percent": round(100 * savings / on_demand_cost, 1) if on_demand_cost else 0.0,
        "attempt_log": [
            {
                "attempt": a.attempt,
                "try_number": a.try_number,
                "backend": a.backend,
                "capacity": a.capacity,
                "outcome": a.outcome,
                "reason": a.reason,
                "exit_code": a.exit_code,
                "interruption": a.interruption,
                "resumed_from_step": a.resumed_from_step,
                "last_step": a.last_step,
                "duration_seconds": a.duration_seconds,
            }
            for a in finished
        ],
    }


def format_report(report: Mapping[str, Any]) -> str:
    lines = [
        f"Spot report for training run {report['training_run_id']}",
        f"  attempts {report['attempts']}, preemptions {report['preemptions']}, "
        f"failures {report['failures']}",
        f"  steps {report['steps']}, steps redone (lost work) {report['steps_redone']}",
        f"  checkpoint time: saving {report['checkpoint_save_seconds_total']:.2f} s, "
        f"restoring {report['checkpoint_restore_seconds_total']:.2f} s",
        f"  billed {report['billed_seconds']:.1f} s on {report['instance_type']} "
        f"(spot {report['spot_seconds']:.1f} s, on-demand {report['on_demand_seconds']:.1f} s)",
        f"  cost ${report['cost_usd']:.6f} vs on-demand uninterrupted ${report['on_demand_cost_usd']:.6f}: "
        f"saved ${report['savings_usd']:.6f} ({report['savings_percent']:.1f} %)",
    ]
    for a in report["attempt_log"]:
        lines.append(
            f"  - attempt {a['attempt']} (try {a['try_number']}, {a['capacity']}): {a['outcome']}, "
            f"{a['reason']}; steps {a['resumed_from_step']}..{a['last_step']}, {a['duration_seconds']} s"
            + (f", injected {a['interruption']}" if a["interruption"] else "")
        )
    return "\n".join(lines)


def log_to_mlflow(report: Mapping[str, Any], tracking_uri: str, run_id: str) -> None:
    """Attach the report to the training run: tags, ``spot_*`` metrics and ``spot_report.json``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    for key in ("attempts", "preemptions", "failures", "instance_type"):
        client.set_tag(run_id, f"tollgate.spot.{key}", str(report[key]))
    for key in (
        "attempts",
        "preemptions",
        "failures",
        "steps_redone",
        "checkpoint_save_seconds_total",
        "checkpoint_restore_seconds_total",
        "billed_seconds",
        "cost_usd",
        "on_demand_cost_usd",
        "savings_usd",
        "savings_percent",
    ):
        client.log_metric(run_id, f"spot_{key}", float(report[key]))
    client.log_dict(run_id, dict(report), REPORT_ARTIFACT)
