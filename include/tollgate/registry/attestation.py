"""Signed decision attestations: who decided what about exactly which model, on which evidence.

Every decision on a model version (approved, promoted, rejected, rollback, automatic rollback) is an
in-toto Statement whose subject is the version's **model signature digest** (sha256 of ``model.sig``,
which covers every file), with the decision, who, when and the evidence digest as predicate. It is
wrapped in a DSSE envelope signed with the *decision key* — a second ECDSA P-256 key, not the
model-signing key registration holds — and stored on the model version as tag
``tollgate.attestation.<decision>``.

Why: anyone who reaches MLflow can set an alias or a ``tollgate.approval.*`` tag. Neither counts. A
champion counts only when its version carries an approval attestation that verifies against a trusted
decision public key and names the signature digest the version's files verify to. A forged or copied
attestation fails: the signature breaks, or the subject names another model.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tollgate.registry.keys import SigningKey, TrustedKey, load_private_key

if TYPE_CHECKING:
    from mlflow import MlflowClient

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://tollgate.dev/attestations/decision/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
TAG_PREFIX = "tollgate.attestation."

APPROVED = "approved"  # a human approved the evidence (from Airflow's HITL record)
PROMOTED = "promoted"  # champion moved to the version after a passed signature check at the move
REJECTED = "rejected"  # a gate or a human rejected the version
ROLLBACK = "rollback"  # champion moved back to the version by a person
AUTOMATIC_ROLLBACK = "automatic_rollback"  # champion moved back to the version by a watch
DECISIONS = (APPROVED, PROMOTED, REJECTED, ROLLBACK, AUTOMATIC_ROLLBACK)


class AttestationError(RuntimeError):
    """A decision cannot be made or trusted; the message names why and what to do."""


def tag_for(decision: str) -> str:
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}; one of {', '.join(DECISIONS)}")
    return TAG_PREFIX + decision


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what the signature covers (type and body, length-prefixed)."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass
class Decision:
    decision: str
    model_name: str
    version: str
    signature_sha256: str  # the model signature digest the decision is about
    decided_by: str
    evidence_sha256: str = ""
    comment: str = ""
    context: dict[str, Any] = field(default_factory=dict)  # e.g. the Airflow run that recorded it
    decided_at: str = ""

    def statement(self) -> dict[str, Any]:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [
                {"name": f"{self.model_name}/{self.version}", "digest": {"sha256": self.signature_sha256}}
            ],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "decision": self.decision,
                "model_name": self.model_name,
                "version": str(self.version),
                "decided_by": self.decided_by,
                "decided_at": self.decided_at or datetime.now(UTC).isoformat(timespec="seconds"),
                "evidence_sha256": self.evidence_sha256,
                "comment": self.comment[:1000],
                "context": self.context,
            },
        }


def sign_decision(decision: Decision, key: SigningKey) -> str:
    """The DSSE envelope (JSON text) of the decision's statement, signed with the decision key."""
    if not decision.signature_sha256 and decision.decision != REJECTED:
        raise AttestationError(
            f"cannot attest {decision.decision} of {decision.model_name} v{decision.version}: no model "
            "signature digest (verify the version first)"
        )
    tag_for(decision.decision)
    payload = json.dumps(decision.statement(), sort_keys=True, separators=(",", ":")).encode()
    private = load_private_key(key.pem, key.password, key.source)
    signature = private.sign(_pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key.key_id, "sig": base64.b64encode(signature).decode()}],
    }
    return json.dumps(envelope, sort_keys=True)


@dataclass
class AttestationCheck:
    ok: bool
    decision: str
    statement: dict[str, Any] | None = None
    key_id: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def predicate(self) -> dict[str, Any]:
        return (self.statement or {}).get("predicate") or {}


def verify_envelope(
    envelope_text: str | None,
    trusted: dict[str, TrustedKey],
    *,
    decision: str,
    model_name: str,
    version: str,
    signature_sha256: str | None,
) -> AttestationCheck:
    """Check an envelope: signed by a trusted decision key, for this decision, model, version and
    signature digest. Never raises for a bad envelope; the problems say what is wrong."""
    check = AttestationCheck(ok=False, decision=decision)
    what = f"{model_name} v{version}"
    if not envelope_text:
        check.problems.append(f"no {decision} attestation on {what}")
        return check
    try:
        envelope = json.loads(envelope_text)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = envelope["signatures"]
        if envelope.get("payloadType") != PAYLOAD_TYPE:
            raise ValueError(f"payloadType {envelope.get('payloadType')!r}")
    except (ValueError, KeyError, TypeError) as err:
        check.problems.append(f"the {decision} attestation on {what} is not a DSSE envelope ({err})")
        return check
    for entry in signatures if isinstance(signatures, list) else []:
        key = trusted.get(str(entry.get("keyid")))
        if key is None:
            continue
        public = serialization.load_pem_public_key(key.pem)
        try:
            sig = base64.b64decode(entry["sig"])
            public.verify(sig, _pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, KeyError, TypeError):
            continue
        check.key_id = key.key_id
        break
    if check.key_id is None:
        check.problems.append(
            f"the {decision} attestation on {what} is not signed by a trusted decision key "
            "(forged, altered, or signed by a key missing from tollgate_decision_public_keys)"
        )
        return check
    statement = json.loads(payload)
    check.statement = statement
    predicate = statement.get("predicate") or {}
    subjects = statement.get("subject") or []
    digests = {(s.get("digest") or {}).get("sha256") for s in subjects}
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        check.problems.append(f"the {decision} attestation on {what} is not a Tollgate decision statement")
    if predicate.get("decision") != decision:
        check.problems.append(
            f"the attestation stored as {decision} on {what} records {predicate.get('decision')!r}"
        )
    if predicate.get("model_name") != model_name or str(predicate.get("version")) != str(version):
        check.problems.append(
            f"the {decision} attestation on {what} was made for "
            f"{predicate.get('model_name')} v{predicate.get('version')} (copied from another version)"
        )
    if not signature_sha256 or signature_sha256 not in digests:
        check.problems.append(
            f"the {decision} attestation on {what} names model signature {sorted(d for d in digests if d)}, "
            f"but the version's signature digest is {signature_sha256} (the files changed since the decision)"
        )
    check.ok = not check.problems
    return check


# ---- storage on the model version ---------------------------------------------------------------
def store(client: MlflowClient, model_name: str, version: str, decision: str, envelope: str) -> None:
    client.set_model_version_tag(model_name, str(version), tag_for(decision), envelope)


def record(client: MlflowClient, decision: Decision, key: SigningKey) -> str:
    """Sign ``decision`` with the decision key and store it on its version; returns the envelope."""
    envelope = sign_decision(decision, key)
    store(client, decision.model_name, decision.version, decision.decision, envelope)
    return envelope


def stored(tags: dict[str, str], decision: str) -> str | None:
    return tags.get(tag_for(decision))


def check_version(
    tags: dict[str, str],
    trusted: dict[str, TrustedKey],
    *,
    decision: str,
    model_name: str,
    version: str,
    signature_sha256: str | None,
) -> AttestationCheck:
    """Verify the ``decision`` attestation stored in a version's tags."""
    return verify_envelope(
        stored(tags, decision),
        trusted,
        decision=decision,
        model_name=model_name,
        version=version,
        signature_sha256=signature_sha256,
    )


# ---- keys ------------------------------------------------------------------------------------------
DECISION_KEYS_VARIABLE = "tollgate_decision_public_keys"


def decision_key_from_airflow() -> SigningKey:
    """The private decision key (inside the promote / rollback tasks only)."""
    from tollgate.config import DECISION_CONN_ID
    from tollgate.registry.keys import signing_key_from_airflow

    return signing_key_from_airflow(DECISION_CONN_ID, purpose="the decision key that signs approvals")
