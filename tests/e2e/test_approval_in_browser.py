"""A person approves a model in the Airflow UI: headless Chromium (Debian's, no browser download)
logs in as `approver`, opens the pending approval under Required Actions, clicks Approve, and the
champion alias moves in MLflow. A screenshot of the approval page is kept in test-artifacts/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tollgate.evaluation.promotion import alias_version
from tollgate.platform.approvals import wait_for_pending_approval

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
MODEL = "tollgate-ctr-browser-test"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is not installed: `make browser-deps` installs it"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


def test_approver_approves_in_the_ui_and_champion_moves(
    browser, local_platform, admin_client, signed_challenger, promotion_dags
):
    from mlflow import MlflowClient

    version = signed_challenger(MODEL, "browser-first", seed=11)
    run = admin_client.trigger("evaluate_and_promote", conf={"model_name": MODEL, "version": version})
    detail = wait_for_pending_approval(admin_client, "evaluate_and_promote", run.dag_run_id)

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{local_platform.airflow_url}/auth/login")
    page.get_by_label("Username").fill("approver")
    page.get_by_label("Password").fill(local_platform.passwords()["approver"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)

    page.goto(f"{local_platform.airflow_url}/required_actions?response_received=false")
    page.get_by_text(detail.subject).first.click(timeout=60_000)
    approve = page.get_by_role("button", name="Approve")
    approve.wait_for(timeout=60_000)
    assert page.get_by_text("Offline metrics on the same fresh holdout").first.is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "approval-page.png"), full_page=True)
    # The approver's comment is required; it is recorded on the model version with the decision.
    page.get_by_role("textbox").last.fill("approved from the Airflow UI")
    approve.click()

    finished = admin_client.wait_for_run("evaluate_and_promote", run.dag_run_id, timeout=300)
    assert finished.state == "success"
    mlflow = MlflowClient(tracking_uri=local_platform.mlflow_url, registry_uri=local_platform.mlflow_url)
    deadline = time.monotonic() + 30
    while alias_version(mlflow, MODEL, "champion") != version and time.monotonic() < deadline:
        time.sleep(1)
    assert alias_version(mlflow, MODEL, "champion") == version
    record = mlflow.get_model_version(MODEL, version).tags
    assert record["tollgate.approval.by"] == "approver"
    assert record["tollgate.approval.comment"] == "approved from the Airflow UI"

    # The MLflow UI shows the alias on the version page too.
    page.goto(f"{local_platform.mlflow_url}/#/models/{MODEL}/versions/{version}")
    page.get_by_text("champion").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "mlflow-champion.png"), full_page=True)
