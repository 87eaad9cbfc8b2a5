"""The guarded decisions: promote, reject and roll back, each checked at the moment it acts and
recorded as a signed attestation (``tollgate.registry.attestation``).

``promote`` moves ``champion`` only when, at that moment:

1. Airflow's own HITL record of the approval task (not an XCom) says Approve, by an assigned
   approver, for exactly the evidence digest being promoted;
2. the version carries no rejection of that evidence;
3. the version verifies again (trusted signature, provenance) and its signature digest is the one in
   the approved evidence — the files did not change between the signature gate and the move.

``rollback`` moves ``champion`` only to a version that verifies and holds valid approval and
promotion attestations: a version that never passed the gates and a human cannot become champion by
the back door. Both run in the one-slot pool ``tollgate_alias_moves`` so alias moves never interleave.

Every refusal raises ``DecisionRefused`` with the reason; nothing is changed before the checks pass.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tollgate.evaluation.approval_record import ApprovalRecord, ApprovalRefused, check_approved
from tollgate.evaluation.promotion import (
    TAG_DECISION,
    TAG_EVIDENCE_SHA256,
    TAG_REJECTED,
    TAG_ROLLBACK,
    DecisionRecord,
    RollbackRecord,
    alias_version,
    evidence_digest,
    promote,
    reject,
    rollback,
)
from tollgate.registry import attestation
from tollgate.registry.attestation import Decision
from tollgate.registry.names import CHAMPION

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from tollgate.registry.keys import SigningKey, TrustedKey
    from tollgate.registry.verify import VerificationResult


class DecisionRefused(RuntimeError):
    """A promotion or rollback was refused; nothing was changed. The message says why."""


@dataclass
class Keys:
    """What a decision task needs: trusted model-signing keys, the decision key and trusted decision keys."""

    model_trusted: dict[str, TrustedKey]
    decision_trusted: dict[str, TrustedKey]
    decision_key: SigningKey | None = None


def body_digest(evidence: dict[str, Any]) -> str:
    """The digest of the evidence as assembled (the ``digest`` field itself excluded)."""
    return evidence_digest({k: v for k, v in evidence.items() if k != "digest"})


def _verify(client: MlflowClient, name: str, version: str, keys: Keys) -> VerificationResult:
    from tollgate.registry.verify import verify_model_version

    return verify_model_version(name, version, keys.model_trusted, client=client)


def _rejection_of(tags: dict[str, str], digest: str, keys: Keys, name: str, version: str) -> str | None:
    """Why the version counts as rejected for this evidence (tag or attestation), else None."""
    if tags.get(TAG_REJECTED) == "true" and tags.get(TAG_EVIDENCE_SHA256) == digest:
        return f"version {version} was rejected on this evidence ({tags.get(TAG_DECISION)})"
    envelope = attestation.stored(tags, attestation.REJECTED)
    if envelope:
        check = attestation.verify_envelope(
            envelope,
            keys.decision_trusted,
            decision=attestation.REJECTED,
            model_name=name,
            version=version,
            signature_sha256=None,
        )
        if check.key_id and check.predicate.get("evidence_sha256") == digest:
            by = check.predicate.get("decided_by")
            return f"version {version} carries a signed rejection of this evidence by {by}"
    return None


def promote_approved(
    client: MlflowClient,
    evidence: dict[str, Any],
    record: ApprovalRecord,
    keys: Keys,
    context: dict[str, Any],
) -> dict[str, Any]:
    """Check approval, rejection and signature at the move, attest, then move ``champion``."""
    name, version = evidence["model_name"], str(evidence["version"])
    where = f"{context.get('dag_id')}/{context.get('run_id')}"
    digest = body_digest(evidence)
    if evidence.get("digest") != digest:
        raise DecisionRefused(
            f"Refusing to promote {name} v{version}: the evidence digest {evidence.get('digest')} does not "
            f"match its content ({digest}); the evidence was altered after it was assembled."
        )
    try:
        approver = check_approved(record, digest, where)
    except Exception as err:
        raise DecisionRefused(str(err)) from None
    tags = dict(client.get_model_version(name, version).tags)
    rejected = _rejection_of(tags, digest, keys, name, version)
    if rejected:
        raise DecisionRefused(f"Refusing to promote {name} v{version}: {rejected}.")
    verified = _verify(client, name, version, keys)
    if not verified.ok:
        raise DecisionRefused(
            f"Refusing to promote {name} v{version}: it no longer verifies at the moment of the move: "
            + "; ".join(verified.problems)
        )
    approved_sig = (evidence.get("signature") or {}).get("signature_sha256")
    if verified.signature_sha256 != approved_sig:
        raise DecisionRefused(
            f"Refusing to promote {name} v{version}: its signature digest is now "
            f"{verified.signature_sha256}, "
            f"but the approver approved signature {approved_sig}. Re-evaluate the version."
        )
    if keys.decision_key is None:
        raise DecisionRefused("Refusing to promote: no decision key to sign the approval with.")
    approval = Decision(
        attestation.APPROVED, name, version, approved_sig, approver, digest, record.comment,
        {**context, "responded_at": record.responded_at},
    )  # fmt: skip
    attestation.record(client, approval, keys.decision_key)
    aliases = promote(client, name, version, DecisionRecord("approved", approver, record.comment, digest))
    promoted = Decision(
        attestation.PROMOTED, name, version, approved_sig, "tollgate promote", digest, "",
        {**context, "previous": aliases.get("previous")},
    )  # fmt: skip
    attestation.record(client, promoted, keys.decision_key)
    return {**aliases, "approved_by": approver, "signature_sha256": approved_sig, "evidence_sha256": digest}


def reject_attested(
    client: MlflowClient,
    evidence: dict[str, Any],
    reasons: list[str],
    decided_by: str,
    comment: str,
    keys: Keys,
    context: dict[str, Any],
) -> dict[str, Any]:
    """Tag the version rejected (champion untouched) and record a signed rejection attestation."""
    name, version = evidence["model_name"], str(evidence["version"])
    digest = evidence.get("digest") or body_digest(evidence)
    outcome = reject(client, name, version, reasons, DecisionRecord("rejected", decided_by, comment, digest))
    if keys.decision_key is not None:
        signature = (evidence.get("signature") or {}).get("signature_sha256") or ""
        decision = Decision(
            attestation.REJECTED, name, version, signature, decided_by, digest, "; ".join(reasons), context
        )
        attestation.record(client, decision, keys.decision_key)
    return outcome


def check_rollback_target(client: MlflowClient, name: str, target: str, keys: Keys) -> VerificationResult:
    """The verified target, or DecisionRefused: it must verify and hold valid approval and promotion
    attestations for exactly its current signature."""
    verified = _verify(client, name, target, keys)
    if not verified.ok:
        raise DecisionRefused(f"Refusing to roll back to {name} {target}: " + "; ".join(verified.problems))
    problems = []
    for decision in (attestation.APPROVED, attestation.PROMOTED):
        check = attestation.check_version(
            verified.tags,
            keys.decision_trusted,
            decision=decision,
            model_name=name,
            version=str(verified.version),
            signature_sha256=verified.signature_sha256,
        )
        problems += check.problems
    if problems:
        raise DecisionRefused(
            f"Refusing to roll back to {name} version {verified.version}: only a version that was approved "
            "and promoted through the gates can become champion again, and " + "; ".join(problems) + "."
        )
    return verified


def rollback_attested(
    client: MlflowClient,
    name: str,
    target: str,
    requested_by: str,
    reason: str,
    request_id: str,
    keys: Keys,
    context: dict[str, Any],
    automatic: bool = False,
) -> RollbackRecord:
    """Check the target at the move, record a signed rollback attestation, then move the aliases."""
    verified = check_rollback_target(client, name, target, keys)
    version = str(verified.version)
    earlier = json.loads(verified.tags.get(TAG_ROLLBACK) or "{}")
    if alias_version(client, name, CHAMPION) == version and earlier.get("request_id") != request_id:
        raise DecisionRefused(
            f"Refusing to roll back: version {version} of {name} is already the champion; "
            "nothing to roll back."
        )
    if keys.decision_key is None:
        raise DecisionRefused("Refusing to roll back: no decision key to sign the rollback with.")
    kind = attestation.AUTOMATIC_ROLLBACK if automatic else attestation.ROLLBACK
    decision = Decision(
        kind, name, version, verified.signature_sha256 or "", requested_by, "", reason,
        {**context, "request_id": request_id},
    )  # fmt: skip
    attestation.record(client, decision, keys.decision_key)
    return rollback(client, name, version, requested_by, reason, request_id=request_id)


def champion_authorisation(
    tags: dict[str, str], name: str, version: str, signature_sha256: str | None, keys: Keys
) -> attestation.AttestationCheck:
    """Whether a version may hold ``champion``: a valid approval attestation for its signature digest."""
    return attestation.check_version(
        tags,
        keys.decision_trusted,
        decision=attestation.APPROVED,
        model_name=name,
        version=str(version),
        signature_sha256=signature_sha256,
    )


# ---- inside Airflow tasks ----------------------------------------------------------------------------
@contextlib.contextmanager
def refusals_fail_the_task() -> Iterator[None]:
    """A refusal is a decision, not a flaky failure: fail the task at once, without retries."""
    try:
        yield
    except (DecisionRefused, ApprovalRefused) as err:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(err)) from None


def keys_from_airflow(with_private: bool) -> Keys:
    """Trusted keys from the Variables; the private decision key only when the task signs decisions."""
    from tollgate.registry.attestation import DECISION_KEYS_VARIABLE, decision_key_from_airflow
    from tollgate.registry.keys import TRUSTED_KEYS_VARIABLE, load_trusted_keys
    from tollgate.runtime import setting

    return Keys(
        model_trusted=load_trusted_keys(setting(TRUSTED_KEYS_VARIABLE)),
        decision_trusted=load_trusted_keys(setting(DECISION_KEYS_VARIABLE)),
        decision_key=decision_key_from_airflow() if with_private else None,
    )


def airflow_context(context: dict[str, Any]) -> dict[str, Any]:
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "try_number": ti.try_number}
