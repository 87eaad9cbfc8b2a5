"""What `make up` prints and keeps: where the passwords are, never the passwords themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tollgate.platform import secrets
from tollgate.platform.stack import LocalStack

pytestmark = pytest.mark.unit


def test_the_announcement_names_the_file_not_the_passwords(tmp_path: Path):
    stack = LocalStack(home=tmp_path)
    stack.passwords()  # made at `make up`, before the announcement
    text = stack.describe({"airflow": 1.0})
    passwords = json.loads((tmp_path / "airflow" / "passwords.json").read_text())
    assert set(passwords) == set(secrets.USERS)
    assert not [user for user, password in passwords.items() if password in text]
    assert str(tmp_path / "airflow" / "passwords.json") in text and "approver" in text
    assert (tmp_path / "airflow" / "passwords.json").stat().st_mode & 0o077 == 0


def test_a_new_account_is_added_without_changing_existing_passwords(tmp_path: Path):
    path = tmp_path / "passwords.json"
    path.write_text(json.dumps({"admin": "kept-admin", "approver": "kept-approver"}))
    passwords = secrets.ensure_passwords(path)
    assert passwords["admin"] == "kept-admin" and passwords["approver"] == "kept-approver"
    assert passwords[secrets.AUDITOR] and json.loads(path.read_text()) == passwords
