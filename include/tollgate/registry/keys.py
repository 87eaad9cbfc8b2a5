"""Signing keys (ECDSA P-256) and trusted public keys.

The private key never comes from code: in Airflow it is read from the Connection
``config.SIGNING_CONN_ID`` (any secrets backend works), elsewhere from a PEM file the operator names.
For the embedded default, ``ensure_dev_keypair`` makes a development pair once in the git-ignored
state folder and ``LocalStack`` points the Connection at it.

A key is identified by its *key id*: the hex SHA-256 of its public key in PEM (SubjectPublicKeyInfo)
form. That is the same value OpenSSF model-signing writes as the ``hint`` of the signature bundle, so
the id in a signature, in a version tag and in the trusted-keys configuration can be compared directly.

Trusted public keys are configuration (Variable ``tollgate_trusted_public_keys``): a list of PEM
files, folders of ``*.pub``/``*.pem`` files, or inline PEM blocks, separated by commas or new lines
(a JSON list works too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

DEV_PRIVATE_KEY = "tollgate-dev-signing.key"
DEV_PUBLIC_KEY = "tollgate-dev-signing.pub"
# The decision key signs approval, rejection and rollback attestations. It is a second pair, distinct from
# the model-signing key that registration holds, so a registration task cannot forge an approval.
DEV_DECISION_PRIVATE_KEY = "tollgate-dev-decision.key"
DEV_DECISION_PUBLIC_KEY = "tollgate-dev-decision.pub"
_PEM_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


class SigningKeyError(ValueError):
    """A key is missing, unreadable or of the wrong kind; the message says which and how to fix it."""


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """Hex SHA-256 of the PEM public key, the id model-signing records as the bundle's key hint."""
    pem = public_key.public_bytes(
        encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def public_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class KeyPair:
    private_key: Path
    public_key: Path
    key_id: str


def ensure_dev_keypair(
    state_dir: Path, private_name: str = DEV_PRIVATE_KEY, public_name: str = DEV_PUBLIC_KEY
) -> KeyPair:
    """A development ECDSA P-256 key pair under ``<state_dir>/keys/``, made once and kept afterwards.

    The private key file is created with mode 0600 before any byte is written to it. The default names
    are the model-signing pair; pass ``DEV_DECISION_*`` for the decision pair.
    """
    keys = Path(state_dir) / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    os.chmod(keys, 0o700)
    private_path, public_path = keys / private_name, keys / public_name
    if private_path.exists() and private_path.stat().st_size > 0:
        private = load_private_key(private_path.read_bytes(), source=str(private_path))
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
    if not public_path.exists() or public_path.read_bytes() != public_pem(private.public_key()):
        public_path.write_bytes(public_pem(private.public_key()))
    return KeyPair(private_path, public_path, key_id(private.public_key()))


def load_private_key(
    pem: bytes, password: bytes | None = None, source: str = "key"
) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password)
    except (ValueError, TypeError) as err:
        raise SigningKeyError(
            f"The signing key from {source} cannot be read as a PEM private key ({err}). "
            "Provide an ECDSA P-256 private key in PEM form (and its passphrase if it is encrypted)."
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SigningKeyError(
            f"The signing key from {source} is not an ECDSA P-256 key. Make one with: "
            "openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt"
        )
    return key


@dataclass(frozen=True)
class SigningKey:
    """A private signing key held in memory. Its repr never shows the key material."""

    pem: bytes = field(repr=False)
    password: bytes | None = field(default=None, repr=False)
    source: str = "unknown"

    def __post_init__(self) -> None:
        load_private_key(self.pem, self.password, self.source)  # fail early, with a clear message

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return load_private_key(self.pem, self.password, self.source).public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    @classmethod
    def from_file(cls, path: str | os.PathLike, password: str | None = None) -> SigningKey:
        path = Path(path)
        if not path.is_file():
            raise SigningKeyError(
                f"Signing key file {path} does not exist. For local use run `make up` (it creates a "
                "development key pair under the state folder), or point Connection 'tollgate_signing' at "
                "your key."
            )
        return cls(path.read_bytes(), password.encode() if password else None, source=str(path))

    @contextlib.contextmanager
    def as_file(self) -> Iterator[Path]:
        """The key written to a private temporary file (model-signing reads keys from paths), then erased."""
        with tempfile.TemporaryDirectory(prefix="tollgate-key-") as tmp:
            path = Path(tmp) / "signing.key"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(self.pem)
            try:
                yield path
            finally:
                path.write_bytes(b"\0" * len(self.pem))


def signing_key_from_connection_fields(
    conn_id: str, password: str | None, extra: dict | str | None
) -> SigningKey:
    """Build the signing key from a Connection's fields.

    Accepted forms (first found wins): ``extra.private_key`` (PEM text), ``password`` (PEM text),
    ``extra.private_key_path`` (a PEM file on the worker). ``extra.passphrase`` unlocks an encrypted key.
    The field name ``private_key`` is one Airflow masks in logs by default.
    """
    if isinstance(extra, str):
        extra = json.loads(extra) if extra.strip() else {}
    extra = extra or {}
    passphrase = extra.get("passphrase")
    pw = passphrase.encode() if passphrase else None
    if extra.get("private_key"):
        return SigningKey(
            extra["private_key"].encode(), pw, source=f"Connection {conn_id!r} (extra.private_key)"
        )
    if password and "PRIVATE KEY" in password:
        return SigningKey(password.encode(), pw, source=f"Connection {conn_id!r} (password)")
    if extra.get("private_key_path"):
        key = SigningKey.from_file(extra["private_key_path"], passphrase)
        return SigningKey(
            key.pem, key.password, source=f"Connection {conn_id!r} ({extra['private_key_path']})"
        )
    raise SigningKeyError(
        f"Connection {conn_id!r} holds no signing key. Set extra.private_key (PEM text), the password "
        "(PEM text) or extra.private_key_path (a PEM file readable by the workers)."
    )


def signing_key_from_airflow(conn_id: str, purpose: str = "the model signing key") -> SigningKey:
    """Read a private key from an Airflow Connection (inside a task; any secrets backend)."""
    from airflow.sdk import Connection

    try:
        conn = Connection.get(conn_id)
    except Exception as err:  # the SDK raises its own error types; name the fix
        raise SigningKeyError(
            f"Airflow Connection {conn_id!r} ({purpose}) is not defined: {type(err).__name__}. "
            f'Create it (for example AIRFLOW_CONN_{conn_id.upper()}=\'{{"conn_type": "generic", '
            '"extra": {"private_key_path": "/path/key.pem"}}\') or add it to your secrets backend.'
        ) from None
    return signing_key_from_connection_fields(conn_id, conn.password, conn.extra_dejson)


# ---- trusted public keys -------------------------------------------------------------------------
@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    pem: bytes = field(repr=False)
    source: str = ""

    @contextlib.contextmanager
    def as_file(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="tollgate-pub-") as tmp:
            path = Path(tmp) / "trusted.pub"
            path.write_bytes(self.pem)
            yield path


def _trusted_from_pem(pem: bytes, source: str) -> TrustedKey:
    try:
        public = serialization.load_pem_public_key(pem)
    except ValueError as err:
        raise SigningKeyError(f"Trusted public key from {source} is not a PEM public key ({err}).") from None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SigningKeyError(f"Trusted public key from {source} is not an elliptic-curve key.")
    return TrustedKey(key_id(public), public_pem(public), source)


def _split_spec(spec: str) -> list[str]:
    spec = spec.strip()
    if spec.startswith("["):
        return [str(item) for item in json.loads(spec)]
    blocks = _PEM_BLOCK.findall(spec)
    rest = _PEM_BLOCK.sub("\n", spec)
    return blocks + [part.strip() for part in re.split(r"[,\n]", rest) if part.strip()]


def load_trusted_keys(spec: str | os.PathLike | list | tuple | None) -> dict[str, TrustedKey]:
    """Key id -> trusted key, from paths (files or folders), inline PEM blocks or a list of those."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise SigningKeyError(
            "No trusted public keys are configured. Set the Variable 'tollgate_trusted_public_keys' to the "
            "public key file(s) of your signer(s)."
        )
    items: list = list(spec) if isinstance(spec, list | tuple) else _split_spec(str(spec))
    trusted: dict[str, TrustedKey] = {}
    for item in items:
        if isinstance(item, TrustedKey):
            trusted[item.key_id] = item
            continue
        text = str(item)
        if "-----BEGIN PUBLIC KEY-----" in text:
            key = _trusted_from_pem(text.encode(), "inline PEM")
            trusted[key.key_id] = key
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".pub", ".pem") and p.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise SigningKeyError(
                f"Trusted public key {path} does not exist. Fix the Variable 'tollgate_trusted_public_keys'."
            )
        for file in files:
            key = _trusted_from_pem(file.read_bytes(), str(file))
            trusted[key.key_id] = key
    return trusted


TRUSTED_KEYS_VARIABLE = "tollgate_trusted_public_keys"


def resolve_trusted_keys(spec: Any = None) -> dict[str, TrustedKey]:
    """Trusted keys from ``spec`` (a dict of loaded keys, paths, PEM text); when None, from the environment
    ``TOLLGATE_TRUSTED_PUBLIC_KEYS`` or the embedded default of the Variable (the development key)."""
    if isinstance(spec, dict):
        return spec
    if spec is None:
        from tollgate.config import default_for

        spec = os.environ.get("TOLLGATE_TRUSTED_PUBLIC_KEYS") or default_for(TRUSTED_KEYS_VARIABLE)
    return load_trusted_keys(spec)
