"""Sign and verify a model folder with OpenSSF model-signing (key-based, ECDSA P-256).

The signature (``model.sig``, a Sigstore bundle holding a DSSE-signed in-toto statement) sits inside the
folder and covers every other file in it, git files included. The same folder verifies with the CLI:

    model_signing verify key DIR --signature DIR/model.sig --public_key KEY.pub
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from tollgate.registry.keys import SigningKey, TrustedKey
from tollgate.registry.names import SIGNATURE_FILE


class AlreadySignedError(RuntimeError):
    """The folder already holds a signature: a model is signed once, never twice."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hashing_config():
    import model_signing

    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


@dataclass(frozen=True)
class SignatureInfo:
    path: Path
    sha256: str  # digest of the signature file itself
    key_id: str  # signer key id (bundle hint)
    files: dict[str, str]  # signed file (relative path) -> sha256


def read_bundle(signature: Path) -> tuple[str, dict[str, str]]:
    """(signer key id, signed files -> sha256) from a signature bundle, without checking it.

    Raises ValueError when the file is not a model-signing bundle.
    """
    try:
        bundle = json.loads(signature.read_text())
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        files = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{signature.name} is not a model-signing signature bundle ({err})") from None
    return hint, files


def sign_model_dir(model_dir: Path, key: SigningKey) -> SignatureInfo:
    """Sign every file of ``model_dir`` into ``model_dir/model.sig``."""
    import model_signing

    model_dir = Path(model_dir)
    signature = model_dir / SIGNATURE_FILE
    if signature.exists():
        raise AlreadySignedError(f"{signature} already exists: refusing to sign the model a second time.")
    with key.as_file() as key_path:
        password = key.password.decode() if key.password else None
        model_signing.signing.Config().use_elliptic_key_signer(
            private_key=key_path, password=password
        ).set_hashing_config(_hashing_config()).sign(model_dir, signature)
    hint, files = read_bundle(signature)
    return SignatureInfo(signature, sha256_file(signature), hint, files)


@dataclass
class FolderVerification:
    """Outcome of checking a folder against its signature and the trusted keys."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    signer_key_id: str | None = None
    signature_sha256: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # signed file -> sha256 (when the bundle is readable)


def _mismatch_problems(message: str) -> list[str]:
    """model-signing reports ``Signature mismatch: [...]``; turn the list into one problem per file."""
    prefix = "Signature mismatch: "
    if message.startswith(prefix):
        try:
            items = ast.literal_eval(message[len(prefix) :])
            if isinstance(items, list) and items:
                return [f"model files do not match the signature: {item}" for item in items]
        except (ValueError, SyntaxError):
            pass
    return [f"model files do not match the signature: {message}"]


def verify_model_dir(model_dir: Path, trusted_keys: dict[str, TrustedKey]) -> FolderVerification:
    """Check ``model_dir`` against ``model_dir/model.sig``, signed by one of ``trusted_keys``."""
    import model_signing
    from cryptography.exceptions import InvalidSignature

    model_dir = Path(model_dir)
    signature = model_dir / SIGNATURE_FILE
    if not signature.is_file():
        return FolderVerification(
            False, [f"no signature: {SIGNATURE_FILE} is missing, so the model files cannot be trusted"]
        )
    result = FolderVerification(False, signature_sha256=sha256_file(signature))
    try:
        result.signer_key_id, result.files = read_bundle(signature)
    except ValueError as err:
        result.problems.append(f"unreadable signature: {err}")
        return result
    trusted = trusted_keys.get(result.signer_key_id)
    if trusted is None:
        result.problems.append(
            f"signed by an untrusted key: key id {result.signer_key_id} is not among the trusted public keys "
            f"({', '.join(sorted(trusted_keys)) or 'none configured'})"
        )
        return result
    try:
        with trusted.as_file() as public_key:
            model_signing.verifying.Config().use_elliptic_key_verifier(
                public_key=public_key
            ).set_hashing_config(_hashing_config()).verify(model_dir, signature)
    except InvalidSignature:
        result.problems.append(
            f"invalid signature: {SIGNATURE_FILE} was not made by trusted key {result.signer_key_id} "
            "(the signed statement was altered or the signature forged)"
        )
    except ValueError as err:
        result.problems.extend(_mismatch_problems(str(err)))
    else:
        result.ok = True
    return result
