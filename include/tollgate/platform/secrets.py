"""Local secrets, generated once at set-up under the ignored state folder and never committed."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

# user -> SimpleAuthManager role. Two service accounts, each with the least it needs:
# tollgate-auditor (viewer) is how promote reads Airflow's own record of an approval answer
# (Connection tollgate_airflow_api); tollgate (op) is how a newer challenger ends older evaluation
# runs (Connection tollgate_airflow_service).
USERS = {"admin": "admin", "approver": "user", "tollgate-auditor": "viewer", "tollgate": "op"}
AUDITOR = "tollgate-auditor"
SERVICE = "tollgate"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(text)


def ensure_passwords(path: Path) -> dict[str, str]:
    """User -> password; generated on first use, kept as is afterwards (a new user gets one added)."""
    existing = json.loads(path.read_text()) if path.exists() else {}
    if set(USERS) <= set(existing):
        return existing
    passwords = {**existing, **{user: secrets.token_urlsafe(12) for user in USERS if user not in existing}}
    _write_private(path, json.dumps(passwords, indent=2))
    return passwords


def ensure_token(path: Path, nbytes: int = 32) -> str:
    """A random secret kept in ``path`` (JWT secret, API secret key)."""
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    token = secrets.token_urlsafe(nbytes)
    _write_private(path, token)
    return token


def ensure_fernet_key(path: Path) -> str:
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    _write_private(path, key)
    return key
