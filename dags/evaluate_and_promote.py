"""
### Evaluate and promote the challenger

Scheduled on the **challenger** Asset (published by `train_model` after signed registration), or
triggered by hand for a model name and version. A run triggered by several queued challenger events
evaluates the **newest** (highest version; the others are logged as skipped), and a run whose newest
event is older than the current `challenger` alias is skipped: an older model is never evaluated or
promoted in place of a newer one. When version N passes the signature gate, **supersede_older_runs**
ends every active run evaluating an older version (at whatever stage: a pending approval is closed), tags that
version `tollgate.superseded_by`, and tells the approvers, so nothing waits behind an obsolete request.

1. **Signature gate** — the challenger's files are checked against its OpenSSF model-signing
   signature (trusted keys only) and its signed provenance against the version's tags.
2. **Offline quality gate** — challenger and champion are scored on the same fresh holdout with the
   active example's gate metrics (env `TOLLGATE_EXAMPLE`; by task type: binary = AUC, log loss,
   calibration error; multiclass = accuracy, macro-F1, log loss); bounds and allowed regressions can be
   overridden by the `tollgate_offline_gate` Variable; the first model ever is held to absolute bounds.
3. **Shadow and canary stages** (when a champion exists and the router serves the model): the router mirrors
   traffic to the challenger (shadow), then sends it 1 % → 5 % → 25 % of requests (canary; weights in the
   Variable `tollgate_rollout`). Each stage waits deferrably (the triggerer polls the router's counters) for
   enough samples and matured labels or its deadline, then judges them statistically
   (`tollgate.evaluation.canary_verdict`): **PASS** → next stage; **FAIL** → the rollout is rolled back at
   once (weight 0, challenger unloaded) and the version rejected with the reasons, nobody asked;
   **INCONCLUSIVE** → the approvers choose Continue, Extend (more traffic, analysed again) or Reject. On the
   local platform the stages replay the dataset's holdout rows as traffic. The teardown `end_rollout`
   leaves the router with the champion alone whatever happens; the rollout's lease ends it even when no
   teardown runs.
4. **Human approval** — an Airflow HITL approval assigned to the `tollgate_approvers`, showing the
   evidence (metrics table, dataset rev, quarantined rows, preemptions, signature, links). No answer
   within `approval_timeout_minutes` counts as Reject. The approvers get an e-mail with the evidence
   and the link to answer, then one with the outcome (addresses: Variable `tollgate_approver_emails`,
   mail through the Connection `smtp_default`).
5. **Promote** (`champion` → new version, old champion → `previous`, approval record on the version's
   tags) — only if Airflow's own approval record shows Approve by an assigned approver for exactly this
   evidence and the version verifies again at the move; approval and promotion are recorded as signed
   attestations (decision key) — or **reject** (version tagged rejected with the reasons, loses
   `challenger`; champion untouched).
   A failed gate rejects without asking a human. A promotion schedules `watch_champion`, which compares
   the new champion with the previous one on live traffic and rolls back by itself on a breach.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, TriggerRule, dag, task

from tollgate.assets import CHALLENGER_MODEL, CHAMPION_MODEL
from tollgate.config import ALIAS_POOL, APPROVAL_TIMEOUT_MINUTES
from tollgate.evaluation.approval import EvidenceApprovalOperator, approval_form
from tollgate.evaluation.notify import ApprovalNotifier
from tollgate.evaluation.rollout_dag import end_rollout_teardown, rollout_stages

default_args = {"owner": "tollgate", "retries": 2, "retry_delay": timedelta(seconds=15)}


@dag(
    schedule=[CHALLENGER_MODEL],
    catchup=False,
    # Several runs may be active so that a newer challenger's run starts and supersedes an older one
    # waiting for approval (task supersede_older_runs) instead of queueing behind it for up to 24 h.
    max_active_runs=3,
    tags=["tollgate", "promotion", "gates"],
    default_args=default_args,
    doc_md=__doc__,
    params={
        "model_name": Param(
            None, type=["null", "string"], description="Registered model (default: from the event)"
        ),
        "version": Param(
            None, type=["null", "string"], description="Version to evaluate (default: from the event)"
        ),
        "approval_timeout_minutes": Param(
            APPROVAL_TIMEOUT_MINUTES,
            type="number",
            minimum=0.05,
            description="Minutes the approver has to answer; no answer counts as Reject.",
        ),
    },
)
def evaluate_and_promote():
    @task
    def resolve_challenger(**context: Any) -> dict[str, str]:
        """The version to evaluate: the run's Params, else the newest triggering challenger event."""
        from airflow.sdk.exceptions import AirflowSkipException

        from tollgate.evaluation.promotion import alias_version
        from tollgate.evaluation.selection import SupersededChallenger, choose_challenger
        from tollgate.registry.names import CHALLENGER
        from tollgate.registry.register import mlflow_client
        from tollgate.runtime import mlflow_uri, setting

        params = context["params"]
        events = context["triggering_asset_events"].get(CHALLENGER_MODEL) or []
        try:
            return choose_challenger(
                param_name=params.get("model_name"),
                param_version=params.get("version"),
                triggering_extras=[event.extra or {} for event in events],
                default_model=setting("tollgate_registered_model"),
                current_challenger=lambda name: alias_version(mlflow_client(mlflow_uri()), name, CHALLENGER),
                log=print,
            )
        except SupersededChallenger as superseded:
            print(f"SKIPPED: {superseded}")
            raise AirflowSkipException(str(superseded)) from superseded

    @task
    def supersede_older_runs(
        challenger: dict[str, str], signature: dict[str, Any], **context: Any
    ) -> list[dict[str, str]]:
        """End the runs evaluating older versions (pending approvals closed), record it, tell approvers.

        Only for a version that passed the signature gate: a run for a made-up or unsigned version
        (anyone may trigger one) must not close the approval of a real candidate.
        """
        from tollgate.evaluation.supersede import supersede_from_task

        if not signature["ok"]:
            print("Not superseding anything: this version did not pass the signature gate.")
            return []
        return supersede_from_task(challenger, context)

    @task
    def signature_gate(challenger: dict[str, str]) -> dict[str, Any]:
        from tollgate.registry.verify import verify_model_version
        from tollgate.runtime import mlflow_uri, setting

        result = verify_model_version(
            challenger["model_name"],
            challenger["version"],
            setting("tollgate_trusted_public_keys"),
            tracking_uri=mlflow_uri(),
        )
        print(result.summary())
        return result.to_dict()

    @task
    def offline_gate(challenger: dict[str, str], signature: dict[str, Any]) -> dict[str, Any]:
        from tollgate import extensions
        from tollgate.evaluation.offline_gate import decide, gate_metrics, metrics_table
        from tollgate.evaluation.promotion import alias_version
        from tollgate.evaluation.scoring import holdout_frame, score_version
        from tollgate.registry.names import CHAMPION
        from tollgate.registry.register import mlflow_client
        from tollgate.runtime import mlflow_uri, setting

        if not signature["ok"]:
            return {
                "gate": "offline_quality",
                "passed": False,
                "reasons": ["not scored: the signature gate refused the model"],
            }
        uri = mlflow_uri()
        dataset = signature["provenance"]["predicate"]["dataset"]
        # The example the version was trained for, from its signed provenance (else the configured one):
        # whose metrics, scorer and holdout schema.
        example = extensions.load(dataset.get("example") or extensions.configured())
        gate = gate_metrics(example, setting("tollgate_offline_gate"))
        holdout = holdout_frame(
            dataset["repo"],
            dataset["rev"],
            dataset["path"],
            float(setting("tollgate_holdout_fraction")),
            example,
        )
        trusted = setting("tollgate_trusted_public_keys")
        challenger_metrics = score_version(
            challenger["model_name"], challenger["version"], holdout, trusted, uri, example
        )
        champion_version = alias_version(mlflow_client(uri), challenger["model_name"], CHAMPION)
        champion_metrics = None
        if champion_version and champion_version != challenger["version"]:
            champion_metrics = score_version(
                challenger["model_name"], champion_version, holdout, trusted, uri, example
            )
        decision = decide(challenger_metrics, champion_metrics, gate, holdout_rows=len(holdout))
        print(f"example {example.name}: {gate.task} gated on {', '.join(gate.names)}")
        print(metrics_table(challenger_metrics, champion_metrics, gate))
        print("offline gate:", "PASSED" if decision.passed else "FAILED", *decision.reasons, sep="\n  ")
        result = decision.to_dict()
        result["champion_version"] = champion_version
        result["gate_metrics"] = gate.as_dict()
        return result

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def assemble_evidence(
        challenger: dict[str, str], signature: dict[str, Any], offline: dict[str, Any], **context: Any
    ) -> dict:
        import json

        from tollgate.evaluation.canary_report import publish_report
        from tollgate.evaluation.evidence import build_evidence
        from tollgate.evaluation.promotion import evidence_digest
        from tollgate.evaluation.rollout_dag import collect
        from tollgate.evaluation.rollout_stages import load_plan, record_on_version, rollout_evidence
        from tollgate.runtime import setting

        entry, stored, records, choices = collect(context, challenger)
        rollout = rollout_evidence(entry, stored, records, choices, load_plan())
        if rollout and rollout.get("ran"):
            rollout["report"] = publish_report(stored, records, setting("tollgate_mlflow_ui_url"))
        record_on_version(challenger, rollout)
        evidence = build_evidence(challenger, signature, offline, setting("tollgate_mlflow_ui_url"), rollout)
        evidence["approval_timeout_minutes"] = float(context["params"]["approval_timeout_minutes"])
        evidence["airflow_run_id"] = context["run_id"]  # the digest names this evaluation, not another
        evidence["digest"] = evidence_digest(evidence)
        print(json.dumps(evidence, indent=2, default=str))
        return evidence

    @task.branch
    def route(evidence: dict[str, Any]) -> str:
        return "approval" if evidence["gates_passed"] else "reject_on_gates"

    @task
    def reject_on_gates(evidence: dict[str, Any], **context: Any) -> dict[str, Any]:
        """A failed gate rejects without asking a human."""
        from tollgate.evaluation.decisions import airflow_context, keys_from_airflow, reject_attested
        from tollgate.evaluation.evidence import gate_reasons
        from tollgate.registry.register import mlflow_client
        from tollgate.runtime import mlflow_uri

        reasons = gate_reasons(evidence)
        outcome = reject_attested(
            mlflow_client(mlflow_uri()), evidence, reasons, "tollgate-gates", "automatic gate failure",
            keys_from_airflow(with_private=True), airflow_context(context),
        )  # fmt: skip
        print(f"REJECTED {evidence['model_name']} v{evidence['version']} by the gates:", *reasons, sep="\n  ")
        return outcome

    approval = EvidenceApprovalOperator(
        task_id="approval",
        evidence_task_id="assemble_evidence",
        params=approval_form(),
        # Approvers are told: the request (evidence + link to answer), then the outcome or the timeout.
        notifiers=[ApprovalNotifier("request")],
        outcome_notifiers=[ApprovalNotifier("outcome")],
    )

    @task(pool=ALIAS_POOL, outlets=[CHAMPION_MODEL])
    def promote(evidence: dict[str, Any], **context: Any) -> dict[str, Any]:
        """Moves champion only if Airflow's HITL record shows Approve of exactly this evidence and the
        version verifies again now (see tollgate.evaluation.decisions); an XCom answer does not count."""
        from tollgate.config import AIRFLOW_API_CONN_ID
        from tollgate.evaluation.approval_record import fetch_approval_record
        from tollgate.evaluation.decisions import (
            airflow_context,
            keys_from_airflow,
            promote_approved,
            refusals_fail_the_task,
        )
        from tollgate.registry.register import mlflow_client
        from tollgate.runtime import mlflow_uri

        where = airflow_context(context)
        with refusals_fail_the_task():
            record = fetch_approval_record(where["dag_id"], where["run_id"], "approval", AIRFLOW_API_CONN_ID)
            outcome = promote_approved(
                mlflow_client(mlflow_uri()), evidence, record, keys_from_airflow(with_private=True), where
            )
        print(f"PROMOTED {evidence['model_name']} v{evidence['version']}: {outcome}")
        # schedules watch_champion (which reads the facts from the signed promoted attestation)
        context["outlet_events"][CHAMPION_MODEL].extra = {
            "model_name": evidence["model_name"],
            "version": str(evidence["version"]),
        }
        return outcome

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def record_human_rejection(evidence: dict[str, Any], **context: Any) -> dict[str, Any] | None:
        """After the approval: a Reject (or no answer in time) rejects the version; Approve was handled.
        Reads Airflow's own HITL record, like promote, not an XCom."""
        from tollgate.config import AIRFLOW_API_CONN_ID
        from tollgate.evaluation.approval_record import APPROVE, ApprovalNotAsked, fetch_approval_record
        from tollgate.evaluation.decisions import airflow_context, keys_from_airflow, reject_attested
        from tollgate.registry.register import mlflow_client
        from tollgate.runtime import mlflow_uri

        where = airflow_context(context)
        try:
            answer = fetch_approval_record(where["dag_id"], where["run_id"], "approval", AIRFLOW_API_CONN_ID)
        except ApprovalNotAsked as missing:
            print(f"no approval to record: {missing}")  # not asked (a gate failed and rejected already)
            return None
        if not answer.response_received or answer.chosen_options == [APPROVE]:
            return None  # still waiting (task marked by hand) or approved: nothing to reject here
        user = answer.responded_by
        reasons = (
            [f"rejected by approver {user}" + (f": {answer.comment}" if answer.comment else "")]
            if user
            else ["no approval answer before the response timeout"]
        )
        outcome = reject_attested(
            mlflow_client(mlflow_uri()), evidence, reasons, user or "timeout", answer.comment,
            keys_from_airflow(with_private=True), where,
        )  # fmt: skip
        print(f"REJECTED {evidence['model_name']} v{evidence['version']}: {reasons}")
        return outcome

    @task(trigger_rule=TriggerRule.ONE_FAILED)
    def fail_run_on_refused_promotion() -> None:
        """Keeps the run failed when promote refused or failed (the rejection recorder after it succeeds).
        AirflowFailException: never retried, whatever the default retries."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("promote failed or refused the promotion: see its log; champion unchanged")

    challenger = resolve_challenger()
    signature = signature_gate(challenger)
    supersede_older_runs(challenger, signature)
    offline = offline_gate(challenger, signature)
    _, begun, rollout_ends = rollout_stages(challenger, signature, offline)
    evidence = assemble_evidence(challenger, signature, offline)
    rollout_ends >> evidence
    # The teardown follows the stages, not the evidence: a task between a setup and its teardown is
    # skipped with a skipped setup, and the evidence (and the gate rejection after it) must always run.
    rollout_ends >> end_rollout_teardown(begun)
    promoted = promote(evidence)
    route(evidence) >> [approval, reject_on_gates(evidence)]
    approval >> promoted >> record_human_rejection(evidence)
    promoted >> fail_run_on_refused_promotion()


evaluate_and_promote()
