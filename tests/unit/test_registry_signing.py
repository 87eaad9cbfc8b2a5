"""Keys, signing, verification and provenance on plain model folders: real ECDSA P-256 keys and real
OpenSSF model-signing signatures, no MLflow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tollgate.registry import names
from tollgate.registry.keys import (
    SigningKey,
    SigningKeyError,
    ensure_dev_keypair,
    load_trusted_keys,
    signing_key_from_connection_fields,
)
from tollgate.registry.provenance import build_statement, check_statement, write_statement
from tollgate.registry.signing import AlreadySignedError, sign_model_dir, verify_model_dir

pytestmark = pytest.mark.unit


@pytest.fixture
def keys(tmp_path: Path):
    return ensure_dev_keypair(tmp_path / "state")


@pytest.fixture
def other_keys(tmp_path: Path):
    return ensure_dev_keypair(tmp_path / "other-state")


def make_model(folder: Path) -> Path:
    (folder / "artifacts" / "trained").mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {python_function: {}}\n")
    (folder / "artifacts" / "trained" / "model.pt").write_bytes(bytes(range(256)) * 40)
    (folder / "artifacts" / "trained" / "result.json").write_text('{"training_run_id": "tr-1"}\n')
    return folder


@pytest.fixture
def signed(tmp_path: Path, keys):
    model = make_model(tmp_path / "model")
    info = sign_model_dir(model, SigningKey.from_file(keys.private_key))
    return model, info


def test_dev_keypair_is_private_stable_and_identified_like_model_signing(tmp_path: Path, keys):
    assert keys.private_key.stat().st_mode & 0o077 == 0
    assert (keys.private_key.parent.stat().st_mode & 0o077) == 0
    again = ensure_dev_keypair(tmp_path / "state")
    assert again.key_id == keys.key_id and again.private_key.read_bytes() == keys.private_key.read_bytes()
    model = make_model(tmp_path / "m")
    info = sign_model_dir(model, SigningKey.from_file(keys.private_key))
    assert info.key_id == keys.key_id  # the id we tag versions with is the bundle's own key hint


def test_signing_key_from_connection_forms_and_no_key_material_in_repr(keys):
    pem = keys.private_key.read_text()
    by_extra = signing_key_from_connection_fields("c", None, {"private_key": pem})
    by_password = signing_key_from_connection_fields("c", pem, "{}")
    by_path = signing_key_from_connection_fields(
        "c", None, json.dumps({"private_key_path": str(keys.private_key)})
    )
    assert by_extra.key_id == by_password.key_id == by_path.key_id == keys.key_id
    assert "PRIVATE" not in repr(by_extra) and pem[40:80] not in repr(by_extra)
    with pytest.raises(SigningKeyError, match="holds no signing key"):
        signing_key_from_connection_fields("tollgate_signing", None, {})
    with pytest.raises(SigningKeyError, match="does not exist"):
        signing_key_from_connection_fields("c", None, {"private_key_path": "/nowhere/key.pem"})
    with pytest.raises(SigningKeyError, match="cannot be read as a PEM private key"):
        # A PEM header with garbage after it (built in two parts: no key-shaped text in the repository).
        not_a_key = "-----BEGIN " + "PRIVATE KEY-----\nnope\n"
        signing_key_from_connection_fields("c", None, {"private_key": not_a_key})


def test_trusted_keys_from_files_folders_inline_pem_and_bad_config(tmp_path: Path, keys, other_keys):
    both = load_trusted_keys(f"{keys.public_key}, {other_keys.public_key}")
    assert set(both) == {keys.key_id, other_keys.key_id}
    assert set(load_trusted_keys(str(keys.public_key.parent))) == {keys.key_id}
    inline = load_trusted_keys(other_keys.public_key.read_text() + "\n" + str(keys.public_key))
    assert set(inline) == {keys.key_id, other_keys.key_id}
    assert set(load_trusted_keys(json.dumps([str(keys.public_key)]))) == {keys.key_id}
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_trusted_keys(str(tmp_path / "missing.pub"))
    with pytest.raises(SigningKeyError, match="No trusted public keys"):
        load_trusted_keys("  ")


def test_signed_folder_verifies_with_the_trusted_key(signed, keys):
    model, info = signed
    result = verify_model_dir(model, load_trusted_keys(str(keys.public_key)))
    assert result.ok, result.problems
    assert result.signer_key_id == keys.key_id
    assert result.signature_sha256 == info.sha256
    assert set(result.files) == {"MLmodel", "artifacts/trained/model.pt", "artifacts/trained/result.json"}


def test_one_changed_byte_is_refused_naming_the_file(signed, keys):
    model, _ = signed
    weights = model / "artifacts" / "trained" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[5000] ^= 0x01
    weights.write_bytes(bytes(data))
    result = verify_model_dir(model, load_trusted_keys(str(keys.public_key)))
    assert not result.ok
    assert any("Hash mismatch for 'artifacts/trained/model.pt'" in p for p in result.problems), (
        result.problems
    )


def test_added_and_removed_files_are_refused(signed, keys):
    model, _ = signed
    trusted = load_trusted_keys(str(keys.public_key))
    (model / "artifacts" / "trained" / "extra.py").write_text("print('hi')\n")
    added = verify_model_dir(model, trusted)
    assert not added.ok and any("Extra files" in p and "extra.py" in p for p in added.problems)
    (model / "artifacts" / "trained" / "extra.py").unlink()
    (model / "MLmodel").unlink()
    removed = verify_model_dir(model, trusted)
    assert not removed.ok and any("Missing files" in p and "MLmodel" in p for p in removed.problems)


def test_no_signature_is_refused(tmp_path: Path, keys):
    result = verify_model_dir(make_model(tmp_path / "unsigned"), load_trusted_keys(str(keys.public_key)))
    assert not result.ok and result.problems[0].startswith("no signature")


def test_signature_by_an_untrusted_key_is_refused(signed, other_keys):
    model, info = signed
    result = verify_model_dir(model, load_trusted_keys(str(other_keys.public_key)))
    assert not result.ok
    assert "untrusted key" in result.problems[0] and info.key_id in result.problems[0]


def test_forged_statement_is_refused(signed, keys):
    """Someone rewrites the signed statement (to cover a swapped file) but cannot re-sign it."""
    import base64

    model, _ = signed
    bundle = json.loads((model / names.SIGNATURE_FILE).read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (model / names.SIGNATURE_FILE).write_text(json.dumps(bundle))
    result = verify_model_dir(model, load_trusted_keys(str(keys.public_key)))
    assert not result.ok and "invalid signature" in result.problems[0]


def test_a_model_is_signed_once(signed, keys):
    model, _ = signed
    with pytest.raises(AlreadySignedError):
        sign_model_dir(model, SigningKey.from_file(keys.private_key))


def _statement(model: Path) -> dict:
    trained = {
        "training_run_id": "tr-1",
        "mlflow_run_id": "run-1",
        "dataset": {"repo": "/data", "rev": "rev-1", "path": "data/x.parquet", "content_hash": "c0ffee"},
        "metrics": {"auc": 0.7},
        "attempts": 2,
        "preemptions": 1,
        "final_checkpoint": "ckpt-00000050.pt",
    }
    return build_statement(
        model,
        trained=trained,
        registered_model="ctr",
        logged_model_id="m-1",
        experiment_id="1",
        params={"lr": 0.003},
        code={"git_commit": "abc"},
        training_image="img:1",
        airflow={"dag_id": "train_model", "run_id": "r1"},
    )


def test_provenance_matches_its_version_and_names_each_mismatch(tmp_path: Path, keys):
    model = make_model(tmp_path / "m")
    statement = _statement(model)
    assert statement["predicate"]["training"] == {
        "training_run_id": "tr-1",
        "attempts": 2,
        "preemptions": 1,
        "final_checkpoint": "ckpt-00000050.pt",
    }
    provenance_sha = write_statement(model, statement)
    info = sign_model_dir(model, SigningKey.from_file(keys.private_key))
    tags = {
        names.TAG_PROVENANCE_SHA256: provenance_sha,
        names.TAG_SIGNATURE_SHA256: info.sha256,
        names.TAG_SIGNER_KEY_ID: info.key_id,
        names.TAG_TRAINING_RUN_ID: "tr-1",
        names.TAG_DATASET_REV: "rev-1",
        names.TAG_DATASET_CONTENT_HASH: "c0ffee",
    }
    version = {"version_name": "ctr", "version_run_id": "run-1", "version_model_id": "m-1"}
    common = {"signer_key_id": info.key_id, "signature_sha256": info.sha256}
    loaded, problems = check_statement(model, tags=tags, **version, **common)
    assert problems == [] and loaded["predicate"]["dataset"]["rev"] == "rev-1"

    _, wrong_rev = check_statement(model, tags={**tags, names.TAG_DATASET_REV: "rev-2"}, **version, **common)
    assert wrong_rev == [
        f"provenance does not match: tag {names.TAG_DATASET_REV} is 'rev-1' in the signed provenance "
        "but 'rev-2' on the model version"
    ]
    _, wrong_run = check_statement(model, tags=tags, **{**version, "version_run_id": "run-2"}, **common)
    assert any("MLflow run id" in p for p in wrong_run)
    untagged = {k: v for k, v in tags.items() if k != names.TAG_PROVENANCE_SHA256}
    _, missing = check_statement(model, tags=untagged, **version, **common)
    assert any("has no tag tollgate.provenance_sha256" in p for p in missing)
    os.remove(model / names.PROVENANCE_FILE)
    _, gone = check_statement(model, tags=tags, **version, **common)
    assert gone[0].startswith("no provenance")
