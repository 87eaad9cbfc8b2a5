"""The data-quality reports app the Airflow plugin mounts (rendering and file serving; login is the
api-server's own check, tested here only for refusing an anonymous request)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tollgate.data.reports_app import create_app, require_login

pytestmark = pytest.mark.unit


def _stored(root: Path, day: str, key: str, outcome: dict) -> None:
    folder = root / "reports" / f"dt={day}" / key
    (folder / "data_docs").mkdir(parents=True)
    (folder / "outcome.json").write_text(json.dumps({"partition": day, **outcome}))
    (folder / "validation.json").write_text('{"suite": "ctr_impressions"}')
    (folder / "data_docs" / "index.html").write_text("<html>docs</html>")


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    _stored(tmp_path, "2024-03-01", "aaa-111", {"status": "passed", "landed_rows": 10, "clean_rows": 10,
                                                "quarantined_rows": 0, "docs_uri": "x"})  # fmt: skip
    _stored(tmp_path, "2024-03-02", "bbb-222", {
        "status": "rejected", "landed_rows": 10, "clean_rows": 0, "quarantined_rows": 10, "docs_uri": "x",
        "quarantine_uri": "q", "batch_failures": {"expect_table_columns_to_match_set": "{}"},
    })  # fmt: skip
    (tmp_path / "quarantine" / "dt=2024-03-02" / "bbb-222").mkdir(parents=True)
    (tmp_path / "quarantine" / "dt=2024-03-02" / "bbb-222" / "reasons.json").write_text('{"why": 1}')
    (tmp_path / "secret.txt").write_text("not for the browser")
    app = create_app(root=str(tmp_path))
    app.dependency_overrides[require_login] = lambda: "viewer"
    return TestClient(app)


def test_index_lists_every_partition_with_status_and_links(client: TestClient):
    page = client.get("/").text
    assert page.index("2024-03-02") < page.index("2024-03-01")  # newest first
    assert "rejected" in page and "expect_table_columns_to_match_set" in page
    assert "./files/reports/dt=2024-03-01/aaa-111/data_docs/index.html" in page
    assert "./files/quarantine/dt=2024-03-02/bbb-222/reasons.json" in page


def test_partition_page_and_files(client: TestClient):
    assert "bbb-222" in client.get("/dt/2024-03-02").text
    assert client.get("/dt/2024-01-01").status_code == 404
    docs = client.get("/files/reports/dt=2024-03-01/aaa-111/data_docs/index.html")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert docs.headers["content-security-policy"] == "sandbox"  # stored HTML never runs as the user
    assert client.get("/files/quarantine/dt=2024-03-02/bbb-222/reasons.json").json() == {"why": 1}


def test_only_reports_and_quarantine_are_served(client: TestClient):
    assert client.get("/files/secret.txt").status_code == 404
    # An escaped `..` reaches the route as `..` (a plain `..` is resolved by the client before sending).
    # The path below, resolved, names a real report; refused, it proves the guard saw the `..`.
    real = "reports/dt=2024-03-01/aaa-111/data_docs/index.html"
    assert client.get(f"/files/{real}").status_code == 200
    escaped = client.get(f"/files/reports/%2E%2E/{real}")
    assert escaped.status_code == 404
    assert escaped.json()["detail"] == "Only files under reports/ and quarantine/ are served."
    outside = client.get("/files/quarantine/%2E%2E/secret.txt")
    assert outside.status_code == 404 and "not for the browser" not in outside.text


def test_anonymous_requests_are_refused(tmp_path: Path):
    assert TestClient(create_app(root=str(tmp_path))).get("/").status_code == 401


def test_values_from_stored_files_are_escaped(tmp_path: Path):
    """A stored outcome is data, not markup: a status or expectation name holding HTML shows as text."""
    _stored(tmp_path, "2024-03-03", "ccc-333", {
        "status": "<img src=x onerror=alert(1)>", "landed_rows": "<b>10</b>", "clean_rows": 0,
        "quarantined_rows": 10, "batch_failures": {"<script>alert(2)</script>": "{}"},
    })  # fmt: skip
    app = create_app(root=str(tmp_path))
    app.dependency_overrides[require_login] = lambda: "viewer"
    page = TestClient(app).get("/").text
    assert "<img" not in page and "<script>" not in page and "<b>10" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in page
