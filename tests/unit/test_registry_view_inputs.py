"""The registry view's inputs: the model name never reaches MLflow's filter unchecked, and a key setting
that cannot be read trusts nothing (no fallback to the built-in development key)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tollgate.registry import ui

pytestmark = pytest.mark.unit


def test_a_model_name_that_would_rewrite_the_filter_is_refused():
    app = ui.create_app(require_user=lambda: "viewer")
    client = TestClient(app)
    for name in ("x' OR name LIKE '%", "a\\'b", "<script>"):
        response = client.get("/api/versions", params={"model": name})
        assert response.status_code == 400 and "letters, digits" in response.json()["detail"]


def test_an_unreadable_key_variable_trusts_no_key(monkeypatch):
    from airflow.sdk import Variable

    def broken(*args, **kwargs):
        raise RuntimeError("secrets backend down")

    monkeypatch.setattr(Variable, "get", broken)
    settings = ui.view_settings("tollgate-ctr")
    assert settings["trusted_keys"] == ui.UNREADABLE and settings["decision_keys"] == ui.UNREADABLE
