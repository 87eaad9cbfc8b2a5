"""Decision attestations: real ECDSA keys, real DSSE envelopes; the forgeries an MLflow user can write."""

from __future__ import annotations

import base64
import json

import pytest

from tollgate.evaluation.approval_record import ApprovalRecord, ApprovalRefused, check_approved, evidence_line
from tollgate.registry import attestation
from tollgate.registry.attestation import Decision
from tollgate.registry.keys import (
    DEV_DECISION_PRIVATE_KEY,
    DEV_DECISION_PUBLIC_KEY,
    SigningKey,
    ensure_dev_keypair,
    load_trusted_keys,
)

pytestmark = pytest.mark.unit

SIG = "a" * 64


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    home = tmp_path_factory.mktemp("decision")
    decision = ensure_dev_keypair(home, DEV_DECISION_PRIVATE_KEY, DEV_DECISION_PUBLIC_KEY)
    signing = ensure_dev_keypair(home)  # the model-signing pair: must not be able to sign decisions
    return {
        "decision": SigningKey.from_file(decision.private_key),
        "trusted": load_trusted_keys(str(decision.public_key)),
        "model_signing": SigningKey.from_file(signing.private_key),
    }


def approve(version: str = "3", signature: str = SIG) -> Decision:
    return Decision(attestation.APPROVED, "ctr", version, signature, "approver", "e" * 64, "ok")


def check(
    envelope: str, keys, version: str = "3", signature: str = SIG, decision: str = attestation.APPROVED
):
    return attestation.verify_envelope(
        envelope,
        keys["trusted"],
        decision=decision,
        model_name="ctr",
        version=version,
        signature_sha256=signature,
    )


def test_a_signed_approval_verifies_for_exactly_its_model(keys):
    envelope = attestation.sign_decision(approve(), keys["decision"])
    result = check(envelope, keys)
    assert result.ok, result.problems
    assert result.predicate["decided_by"] == "approver" and result.predicate["evidence_sha256"] == "e" * 64
    # the same envelope copied onto another version, or checked against changed files, does not count
    assert "copied from another version" in check(envelope, keys, version="4").problems[0]
    assert "the files changed" in " ".join(check(envelope, keys, signature="b" * 64).problems)
    # stored under another decision's tag
    assert "records 'approved'" in " ".join(check(envelope, keys, decision=attestation.PROMOTED).problems)


def test_forged_or_altered_attestations_are_refused(keys):
    assert check("", keys).problems == ["no approved attestation on ctr v3"]
    # an MLflow user writes a plausible statement without the key
    statement = approve().statement()
    forged = {
        "payloadType": attestation.PAYLOAD_TYPE,
        "payload": base64.b64encode(json.dumps(statement).encode()).decode(),
        "signatures": [{"keyid": next(iter(keys["trusted"])), "sig": base64.b64encode(b"x" * 64).decode()}],
    }
    assert "not signed by a trusted decision key" in check(json.dumps(forged), keys).problems[0]
    # a real envelope whose payload is changed (approver renamed)
    envelope = json.loads(attestation.sign_decision(approve(), keys["decision"]))
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["predicate"]["decided_by"] = "mallory"
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    assert "not signed by a trusted decision key" in check(json.dumps(envelope), keys).problems[0]
    # signed with the model-signing key (registration holds it): not a decision key
    by_registration = attestation.sign_decision(approve(), keys["model_signing"])
    assert not check(by_registration, keys).ok
    assert "not a DSSE envelope" in check("{not json", keys).problems[0]


def record(**overrides) -> ApprovalRecord:
    fields = {
        "subject": "Promote ctr version 3 to champion?",
        "body": "metrics...\n\n" + evidence_line("d" * 64),
        "response_received": True,
        "chosen_options": ["Approve"],
        "responded_by": "approver",
        "assigned_users": ["approver"],
    }
    return ApprovalRecord(**{**fields, **overrides})


def test_only_an_assigned_approve_of_this_evidence_passes():
    assert check_approved(record(), "d" * 64, "run") == "approver"
    refusals = {
        "no answer": record(response_received=False, chosen_options=[], responded_by=None),
        "not Approve": record(chosen_options=["Reject"]),
        "timeout": record(chosen_options=["Reject"], responded_by=None),
        "not assigned": record(responded_by="admin"),
        "other evidence": record(body=evidence_line("f" * 64)),
    }
    for why, bad in refusals.items():
        with pytest.raises(ApprovalRefused, match="Refusing to promote"):
            check_approved(bad, "d" * 64, "run")
            pytest.fail(why)
