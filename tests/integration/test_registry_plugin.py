"""The model registry view, served by the real Airflow api-server of the local platform (the plugin is
loaded from plugins/), listing versions registered from a real training run into the platform's MLflow
and signed with the platform's development key."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import requests

from tollgate.registry import names

pytestmark = pytest.mark.integration

MODEL = "tollgate-ctr-view-test"


@pytest.fixture(scope="module")
def registered(local_platform, tmp_path_factory):
    from tollgate.registry.keys import SigningKey, ensure_dev_keypair
    from tollgate.registry.register import register_signed_challenger
    from tollgate.training.synthetic import write_parquet
    from tollgate.training.testing import child_env

    work = tmp_path_factory.mktemp("registry-view")
    data = write_parquet(work / "events.parquet", 1500, seed=5)
    out = work / "out"
    command = [
        sys.executable, "-m", "tollgate.training", "--data-file", str(data),
        "--checkpoint-uri", str(work / "ckpt"), "--output-uri", str(out), "--training-run-id", "view-1",
        "--epochs", "1", "--mlflow-uri", local_platform.mlflow_url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    # Trained from a plain file, so there is no DVC rev: label the data by its content hash.
    dataset = {**result["dataset"], "rev": f"file-{result['dataset']['content_hash'][:12]}"}
    keys = ensure_dev_keypair(local_platform.home)  # the key the platform's Connection points at
    registered = register_signed_challenger(
        {**result, "dataset": dataset, "model_uri": str(out), "checkpoint_uri": str(work / "ckpt")},
        signing_key=SigningKey.from_file(keys.private_key),
        trusted_keys=str(keys.public_key),
        model_name=MODEL,
        tracking_uri=local_platform.mlflow_url,
    )
    return {"registered": registered, "metrics": result["metrics"], "rev": dataset["rev"]}


def test_plugin_view_lists_versions_with_alias_signature_rev_metrics_and_links(
    local_platform, admin_client, registered
):
    base = f"{local_platform.airflow_url}/tollgate/registry"
    version = registered["registered"]["version"]

    plugins = admin_client.plugins.get_plugins().plugins
    plugin = next(p for p in plugins if p.name == "tollgate_registry")
    assert plugin.external_views[0].href == "tollgate/registry/"

    assert requests.get(f"{base}/?model={MODEL}", timeout=60).status_code == 401  # signed-in users only

    rows = admin_client.session.get(f"{base}/api/versions", params={"model": MODEL}, timeout=120)
    assert rows.status_code == 200, rows.text
    row = next(r for r in rows.json()["versions"] if r["version"] == version)
    assert row["aliases"] == [names.CHALLENGER]
    assert row["signature"] == "verified" and row["problems"] == []
    assert row["dataset_rev"] == registered["rev"]
    assert row["metrics"] == registered["metrics"]
    assert row["links"]["model_version"] == f"{local_platform.mlflow_url}/#/models/{MODEL}/versions/{version}"
    assert row["links"]["training_run"].endswith(f"/runs/{registered['registered']['mlflow_run_id']}")

    page = admin_client.session.get(f"{base}/", params={"model": MODEL}, timeout=120)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f'<tr data-version="{version}">' in page.text
    assert "challenger" in page.text and "verified" in page.text and registered["rev"] in page.text

    lineage = admin_client.session.get(
        f"{base}/api/versions/challenger/lineage", params={"model": MODEL}, timeout=120
    )
    assert lineage.status_code == 200 and lineage.json()["training_run"]["training_run_id"] == "view-1"


def _stored_files(local_platform, version_number: str):
    from mlflow import MlflowClient

    from tollgate.registry.verify import logged_model_id_of

    client = MlflowClient(tracking_uri=local_platform.mlflow_url, registry_uri=local_platform.mlflow_url)
    version = client.get_model_version(MODEL, version_number)
    location = client.get_logged_model(logged_model_id_of(version)).artifact_location
    return local_platform.home / "mlflow" / "artifacts" / location.removeprefix("mlflow-artifacts:/")


def test_a_second_view_reuses_the_check_and_a_changed_signature_is_checked_again(
    local_platform, admin_client, registered
):
    """Page views do not download and verify every version again: the result is reused while the version's
    signature digest (and files, tags, keys) stay the same; a model.sig with other bytes of the same size is
    verified again at the next view, and refused."""
    version = registered["registered"]["version"]

    def row() -> dict:
        url = f"{local_platform.airflow_url}/tollgate/registry/api/versions"
        response = admin_client.session.get(url, params={"model": MODEL}, timeout=120)
        return next(r for r in response.json()["versions"] if r["version"] == version)

    first, second = row(), row()
    assert first["signature"] == second["signature"] == "verified"
    assert second["checked_at"] == first["checked_at"]  # the second view reused the check

    signature = _stored_files(local_platform, version) / names.SIGNATURE_FILE
    original = signature.read_bytes()
    middle = len(original) // 2
    at = next(i for i in range(middle, len(original)) if chr(original[i]).isalnum())
    swapped = b"B" if original[at : at + 1] == b"A" else b"A"
    try:
        signature.write_bytes(original[:at] + swapped + original[at + 1 :])  # same size, other digest
        third = row()
    finally:
        signature.write_bytes(original)
    assert third["checked_at"] > first["checked_at"]
    assert third["signature"] == "refused" and third["problems"]


def test_plugin_view_shows_a_tampered_version_as_refused(local_platform, admin_client, registered, tmp_path):
    from mlflow import MlflowClient

    from tollgate.registry.verify import logged_model_id_of

    client = MlflowClient(tracking_uri=local_platform.mlflow_url, registry_uri=local_platform.mlflow_url)
    version = client.get_model_version(MODEL, registered["registered"]["version"])
    location = client.get_logged_model(logged_model_id_of(version)).artifact_location
    files = local_platform.home / "mlflow" / "artifacts" / location.removeprefix("mlflow-artifacts:/")
    shutil.copytree(files, tmp_path / "backup")
    try:
        (files / "MLmodel").write_text((files / "MLmodel").read_text() + "# edited\n")
        response = admin_client.session.get(
            f"{local_platform.airflow_url}/tollgate/registry/api/versions",
            params={"model": MODEL},
            timeout=120,
        )
        row = next(r for r in response.json()["versions"] if r["version"] == version.version)
        assert row["signature"] == "refused"
        assert any("Hash mismatch for 'MLmodel'" in p for p in row["problems"]), row["problems"]
    finally:
        shutil.rmtree(files)
        shutil.copytree(tmp_path / "backup", files)
