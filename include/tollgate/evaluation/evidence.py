"""The evidence a gate decision rests on, and the approval request built from it.

The same dictionary goes to the task log, to MLflow (as a run artifact of the challenger) and into the
approval body, and its digest is pinned on the version with the decision: approver and auditor see
the same facts.
"""

from __future__ import annotations

from typing import Any

from tollgate.evaluation.approval_record import evidence_line
from tollgate.evaluation.offline_gate import metrics_table
from tollgate.extensions import GateMetrics


def build_evidence(
    challenger: dict[str, Any],
    signature: dict[str, Any],
    offline: dict[str, Any],
    mlflow_ui: str,
    rollout: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``rollout``: the shadow and canary stages' part (``rollout_stages.rollout_evidence``), if any."""
    provenance = (signature.get("provenance") or {}).get("predicate", {})
    dataset = provenance.get("dataset", {})
    training = provenance.get("training", {})
    gates = {
        "signature": {"passed": bool(signature.get("ok")), "reasons": list(signature.get("problems") or [])}
    }
    gates["offline_quality"] = {
        "passed": bool(offline.get("passed")),
        "reasons": list(offline.get("reasons") or []),
    }
    if rollout is not None:
        gates["shadow_canary"] = dict(rollout["gate"])
    run_id = signature.get("run_id")
    name, version = challenger["model_name"], challenger["version"]
    return {
        "model_name": challenger["model_name"],
        "version": str(challenger["version"]),
        "gates": gates,
        "gates_passed": all(g["passed"] for g in gates.values()),
        "metrics": {"challenger": offline.get("challenger") or {}, "champion": offline.get("champion")},
        "holdout_rows": offline.get("holdout_rows", 0),
        "thresholds": offline.get("thresholds", {}),
        "gate_metrics": offline.get("gate_metrics"),  # which metrics, directions, bounds (the example's)
        "dataset": {
            "rev": dataset.get("rev"),
            "content_hash": dataset.get("content_hash"),
            "rows": dataset.get("rows"),
            "quarantined_rows": dataset.get("quarantined_rows"),
            "window": [dataset.get("window_start"), dataset.get("window_end")],
            "validation_report": dataset.get("validation_report"),
        },
        "training": {
            "attempts": training.get("attempts"),
            "preemptions": training.get("preemptions"),
            "resumed_from": training.get("resumed_from"),
            "final_checkpoint": training.get("final_checkpoint"),
        },
        "signature": {
            "ok": bool(signature.get("ok")),
            "signer_key_id": signature.get("signer_key_id"),
            "signature_sha256": signature.get("signature_sha256"),
            "provenance_sha256": signature.get("provenance_sha256"),
            "problems": list(signature.get("problems") or []),
        },
        "rollout": rollout,
        "links": {
            "mlflow_run": f"{mlflow_ui}/#/experiments/0/runs/{run_id}" if run_id else None,
            "mlflow_model_version": f"{mlflow_ui}/#/models/{name}/versions/{version}",
        },
    }


def gate_reasons(evidence: dict[str, Any]) -> list[str]:
    return [f"{name}: {reason}" for name, gate in evidence["gates"].items() for reason in gate["reasons"]]


def dataset_facts(data: dict[str, Any]) -> str:
    """Rows, quarantined rows and window, for the facts the dataset's lineage carries."""
    facts = []
    if data.get("rows") is not None:
        facts.append(f"{data['rows']} rows")
    if data.get("quarantined_rows") is not None:
        facts.append(f"{data['quarantined_rows']} quarantined")
    if data["window"][0]:
        facts.append(f"window {data['window'][0]} → {data['window'][1]}")
    return (", " + ", ".join(facts)) if facts else ""


def approval_subject(evidence: dict[str, Any]) -> str:
    return f"Promote {evidence['model_name']} version {evidence['version']} to champion?"


def _gate_metrics(evidence: dict[str, Any]) -> GateMetrics | None:
    raw = evidence.get("gate_metrics")
    return GateMetrics.from_dict(raw) if raw else None


def approval_body(evidence: dict[str, Any]) -> str:
    """Markdown shown to the approver in Required Actions."""
    metrics = evidence["metrics"]
    data, train, sig = evidence["dataset"], evidence["training"], evidence["signature"]
    lines = [
        f"**{evidence['model_name']} v{evidence['version']}** passed every automatic gate.",
        "",
        f"Offline metrics on the same fresh holdout ({evidence['holdout_rows']} rows):",
        "",
        metrics_table(metrics["challenger"], metrics["champion"], _gate_metrics(evidence)),
        "",
        f"- Dataset rev `{data['rev']}` (content sha256 `{(data['content_hash'] or '')[:16]}…`)"
        + dataset_facts(data),
        f"- Training: {train['attempts']} attempt(s), {train['preemptions']} spot preemption(s), "
        f"final weights from checkpoint `{train['final_checkpoint']}`",
        f"- Signature: {'verified' if sig['ok'] else 'REFUSED'} (key `{sig['signer_key_id']}`, "
        f"signature sha256 `{(sig['signature_sha256'] or '')[:16]}…`)",
        f"- MLflow run: {evidence['links']['mlflow_run']}",
        f"- Model version: {evidence['links']['mlflow_model_version']}",
    ]
    if data.get("validation_report"):
        lines.append(f"- Validation report: {data['validation_report']}")
    rollout = evidence.get("rollout")
    if rollout and rollout.get("ran"):
        lines += ["", f"Shadow and canary on live traffic (evidence sha256 `{rollout['sha256']}`):", ""]
        lines.append(rollout["table"])
        if rollout.get("report"):
            lines.append(f"- Canary report (latency, scores, calibration per variant): {rollout['report']}")
        lines += [f"- Approvers' choice at {s}: {c}" for s, c in rollout["choices"].items() if c]
    elif rollout:
        lines.append(f"- Shadow and canary: {rollout['note']}")
    lines += ["", "Approve to make it the champion (the current one becomes `previous`), or Reject."]
    if evidence.get("digest"):  # binds this request to exactly this evidence: promote checks it
        lines += ["", evidence_line(evidence["digest"])]
    return "\n".join(lines)
