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


def test_the_page_escapes_every_value_and_links_only_to_http():
    row = {
        "version": "3", "aliases": ["<b>x"], "unauthorised_aliases": [], "signature": "refused",
        "problems": ["<script>alert(1)</script>"], "signer_key_id": None, "dataset_rev": "abc\"><i>",
        "training_run_id": None, "metrics": {"<u>macro_f1": 0.5, "accuracy": 0.91},
        "created": "now", "checked": None,
        "links": {"model_version": "javascript:alert(3)", "training_run": 'http://m/?a=1&b="2'},
    }  # fmt: skip
    page = ui.render_page("<model>", [row])
    assert "<script>" not in page and "<b>x" not in page and "<i>" not in page and "<model>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "abc&#34;&gt;&lt;i&gt;" in page
    assert "&lt;u&gt;macro_f1 0.5000" in page and "accuracy 0.9100" in page  # any example's metrics
    assert "javascript:" not in page  # a link that is not http(s) is left out
    assert 'href="http://m/?a=1&amp;b=&#34;2"' in page
