"""Signed registration against a real ``mlflow server``: real trainer output, a real git + DVC dataset
version, real ECDSA keys and OpenSSF model-signing signatures. Tampering is done the way an attacker
with write access to the artifact store would: on the server's files."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tollgate.registry import names

pytestmark = pytest.mark.integration

MODEL = "tollgate-ctr-registry-test"
BIN = Path(sys.executable).parent


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world(mlflow_server, session_dir: Path, tmp_path_factory):
    """A dataset version (with its validation report), two real training runs, the dev key pair."""
    from mlflow import MlflowClient

    from tollgate.data.generator import generate, to_parquet_bytes
    from tollgate.data.versioning import DataRepo
    from tollgate.registry.keys import SigningKey, ensure_dev_keypair
    from tollgate.training.testing import child_env

    work = tmp_path_factory.mktemp("registry")
    report = work / "storage" / "reports" / "dt=2026-04-01" / "k1" / "validation.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"suite": "ctr_landing", "gate": {"status": "accepted"}}))
    clean = work / "clean.parquet"
    clean.write_bytes(to_parquet_bytes(generate("2026-04-01", rows=2000, seed=11)))
    repo = DataRepo(work / "data-repo", str(work / "dvc-remote"), window_days=1)
    version = repo.publish(
        "2026-04-01",
        str(clean),
        quarantined_rows=0,
        gate={"report_uri": str(report), "status": "accepted"},
        log=lambda *_: None,
    )

    def command(run_id: str, seed: int) -> list[str]:
        return [
            sys.executable, "-m", "tollgate.training",
            "--data-repo", str(repo.path), "--data-rev", version.rev,
            "--checkpoint-uri", str(work / "ckpt" / run_id), "--output-uri", str(work / "out" / run_id),
            "--training-run-id", run_id, "--seed", str(seed), "--epochs", "1", "--checkpoint-every", "5",
            "--mlflow-uri", mlflow_server.url,
        ]  # fmt: skip

    def start(run_id: str, seed: int) -> subprocess.Popen:
        with open(work / f"{run_id}.stderr", "w") as err:
            return subprocess.Popen(
                command(run_id, seed), env=child_env(), stdout=subprocess.PIPE, stderr=err, text=True
            )

    # Two runs side by side; the second starts once the first has logged its dataset to MLflow (two
    # runs creating the same MLflow dataset at the same instant collide in the tracking store).
    first = start("reg-a", 1)
    for line in first.stdout:
        if line.startswith("TOLLGATE_RESUMED") or first.poll() is not None:
            break
    procs = {"reg-a": first, "reg-b": start("reg-b", 2)}
    for run_id, proc in procs.items():
        proc.communicate(timeout=600)
        err = (work / f"{run_id}.stderr").read_text()
        assert proc.returncode == 0, f"training {run_id} failed:\n{err[-3000:]}"

    def trained(run_id: str) -> dict:
        """What train_model's publish_trained_model task returns (flat dataset keys)."""
        result = json.loads((work / "out" / run_id / "result.json").read_text())
        return {
            "training_run_id": run_id,
            "mlflow_run_id": result["mlflow_run_id"],
            "model_uri": str(work / "out" / run_id),
            "checkpoint_uri": str(work / "ckpt" / run_id),
            "rev": version.rev,
            "content_hash": result["dataset"]["content_hash"],
            "data_repo": str(repo.path),
            "data_path": version.data_path,
            "metrics": result["metrics"],
            "attempts": 1,
            "preemptions": 0,
            "final_checkpoint": result["final_checkpoint"],
        }

    keys = ensure_dev_keypair(work / "state")
    return {
        "work": work,
        "version": version,
        "report": report,
        "trained": trained,
        "keys": keys,
        "signing_key": SigningKey.from_file(keys.private_key),
        "other_keys": ensure_dev_keypair(work / "other-state"),
        "client": MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url),
        "artifacts": session_dir / "mlflow" / "artifacts",  # the server's --artifacts-destination
        "url": mlflow_server.url,
    }


def register(world, run_id: str, **kwargs):
    from tollgate.registry.register import register_signed_challenger

    return register_signed_challenger(
        world["trained"](run_id),
        signing_key=world["signing_key"],
        trusted_keys=str(world["keys"].public_key),
        model_name=MODEL,
        tracking_uri=world["url"],
        training_image="ghcr.io/tollgate-mlops/tollgate-training:test",
        airflow={"dag_id": "train_model", "run_id": f"manual__{run_id}", "task_id": "train_local"},
        **kwargs,
    )


@pytest.fixture(scope="module")
def registered_a(world):
    return register(world, "reg-a")


def stored_files(world, version: str) -> Path:
    """The version's files on the server's disk (artifact root + the logged model's location)."""
    from tollgate.registry.verify import logged_model_id_of

    mv = world["client"].get_model_version(MODEL, version)
    location = world["client"].get_logged_model(logged_model_id_of(mv)).artifact_location
    return world["artifacts"] / location.removeprefix("mlflow-artifacts:/")


def verify(world, ref: str, trusted=None):
    from tollgate.registry.verify import verify_model_version

    return verify_model_version(
        MODEL, ref, trusted or str(world["keys"].public_key), tracking_uri=world["url"]
    )


def test_challenger_is_signed_tagged_and_carries_full_provenance(world, registered_a, tmp_path):
    from tollgate.registry.logged_model import pip_requirements
    from tollgate.registry.verify import load_verified_model
    from tollgate.training.predict import load_predictor

    client, version = world["client"], registered_a["version"]
    assert client.get_model_version_by_alias(MODEL, names.CHALLENGER).version == version
    files = stored_files(world, version)
    tags = client.get_model_version(MODEL, version).tags
    assert (
        tags[names.TAG_SIGNATURE_SHA256]
        == sha256(files / names.SIGNATURE_FILE)
        == registered_a["signature_digest"]
    )
    assert tags[names.TAG_PROVENANCE_SHA256] == sha256(files / names.PROVENANCE_FILE)
    assert tags[names.TAG_SIGNER_KEY_ID] == world["keys"].key_id
    assert tags[names.TAG_DATASET_REV] == world["version"].rev
    assert (files / "requirements.txt").read_text().split() == pip_requirements()

    result = verify(world, names.CHALLENGER)
    assert result.ok, result.problems
    predicate = result.provenance["predicate"]
    trained = world["trained"]("reg-a")
    assert predicate["dataset"] == {
        "repo": trained["data_repo"],
        "rev": world["version"].rev,
        "path": trained["data_path"],
        "content_hash": trained["content_hash"],
    }
    recorded = predicate["code"]["git_commit"]  # the checkout's commit then (others may commit since)
    assert subprocess.run(["git", "merge-base", "--is-ancestor", recorded, "HEAD"]).returncode == 0
    assert predicate["training_image"] == "ghcr.io/tollgate-mlops/tollgate-training:test"
    assert predicate["params"]["epochs"] == "1" and predicate["params"]["seed"] == "1"
    assert predicate["metrics"] == trained["metrics"]
    assert predicate["mlflow"]["run_id"] == trained["mlflow_run_id"] == result.run_id
    assert predicate["airflow"]["run_id"] == "manual__reg-a"
    manifest = json.loads((world["work"] / "ckpt" / "reg-a" / "manifest.json").read_text())
    final = next(c for c in manifest["checkpoints"] if c["name"] == trained["final_checkpoint"])
    assert predicate["training"]["final_checkpoint_sha256"] == final["sha256"]
    assert (predicate["training"]["attempts"], predicate["training"]["preemptions"]) == (1, 0)

    # The pyfunc loads from the verified files and scores like the trainer's own predictor.
    from tollgate.data.generator import generate

    frame = generate("2026-04-02", rows=50, seed=3)
    model, _ = load_verified_model(
        MODEL, names.CHALLENGER, tmp_path / "model", str(world["keys"].public_key), tracking_uri=world["url"]
    )
    expected = load_predictor(trained["model_uri"]).predict_proba(frame)
    assert list(model.predict(frame)) == pytest.approx(list(expected))
    assert model.metadata.signature is not None and model.metadata.get_input_schema() is not None


def test_rerun_returns_the_same_version_without_a_second_signature(world, registered_a):
    client = world["client"]
    signature = stored_files(world, registered_a["version"]) / names.SIGNATURE_FILE
    before = (signature.read_bytes(), signature.stat().st_mtime_ns)
    again = register(world, "reg-a")
    assert again["version"] == registered_a["version"] and again["created"] is False
    assert again["signature_digest"] == registered_a["signature_digest"]
    assert (signature.read_bytes(), signature.stat().st_mtime_ns) == before
    found = client.search_model_versions(f"name = '{MODEL}' and tags.`{names.TAG_TRAINING_RUN_ID}` = 'reg-a'")
    assert [v.version for v in found] == [registered_a["version"]]
    experiment = client.get_run(registered_a["mlflow_run_id"]).info.experiment_id
    logged = client.search_logged_models(
        [experiment], filter_string=f"tags.`{names.TAG_TRAINING_RUN_ID}` = 'reg-a'"
    )
    assert len(logged) == 1 and logged[0].tags[names.TAG_SIGNED] == "true"


def test_a_twin_version_left_by_a_retried_request_is_folded_into_one(world, registered_a):
    """A create request retried after the server committed it leaves a twin; the next run keeps one."""
    from tollgate.registry.verify import logged_model_id_of

    client = world["client"]
    original = client.get_model_version(MODEL, registered_a["version"])
    twin = client.create_model_version(
        MODEL, original.source, original.run_id, tags=original.tags, model_id=logged_model_id_of(original)
    )
    assert int(twin.version) > int(original.version)
    again = register(world, "reg-a")
    assert again["version"] == registered_a["version"]
    found = client.search_model_versions(f"name = '{MODEL}' and tags.`{names.TAG_TRAINING_RUN_ID}` = 'reg-a'")
    assert [v.version for v in found] == [registered_a["version"]]


def test_model_signing_cli_verifies_a_downloaded_version(world, registered_a, tmp_path):
    """Independent verification, exactly as the README shows it: the mlflow CLI downloads the version's
    logged-model files, the model_signing CLI checks them against the public key."""
    import os

    from tollgate.registry.verify import logged_model_id_of

    mv = world["client"].get_model_version(MODEL, registered_a["version"])
    location = world["client"].get_logged_model(logged_model_id_of(mv)).artifact_location
    env = {**os.environ, "MLFLOW_TRACKING_URI": world["url"]}
    download = [str(BIN / "mlflow"), "artifacts", "download", "-u", location, "-d", str(tmp_path)]
    fetched = subprocess.run(download, capture_output=True, text=True, timeout=300, env=env)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    folder = Path(fetched.stdout.strip().splitlines()[-1])
    assert folder == tmp_path / "artifacts" and (folder / names.SIGNATURE_FILE).is_file()
    cli = [
        str(BIN / "model_signing"), "verify", "key", str(folder),
        "--signature", str(folder / names.SIGNATURE_FILE), "--public_key", str(world["keys"].public_key),
    ]  # fmt: skip
    ok = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "Verification succeeded" in ok.stdout, ok.stderr
    assert sha256(folder / names.SIGNATURE_FILE) == mv.tags[names.TAG_SIGNATURE_SHA256]
    weights = folder / "artifacts" / names.TRAINED_FILES_DIR / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    tampered = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert tampered.returncode == 1 and "Verification failed" in tampered.stderr


def _flip_byte(files: Path) -> None:
    weights = files / "artifacts" / names.TRAINED_FILES_DIR / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))


def _add_file(files: Path) -> None:
    (files / "code" / "tollgate" / "training" / "sitecustomize.py").write_text("import os\n")


def _remove_file(files: Path) -> None:
    (files / "requirements.txt").unlink()


def _remove_signature(files: Path) -> None:
    (files / names.SIGNATURE_FILE).unlink()


@pytest.fixture
def resign_with(world):
    def resign(files: Path) -> None:
        """An attacker swaps the weights and re-signs everything with a key of their own."""
        from tollgate.registry.keys import SigningKey
        from tollgate.registry.signing import sign_model_dir

        _flip_byte(files)
        (files / names.SIGNATURE_FILE).unlink()
        sign_model_dir(files, SigningKey.from_file(world["other_keys"].private_key))

    return resign


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_flip_byte, "Hash mismatch for 'artifacts/trained/model.pt'"),
        (_add_file, "Extra files"),
        (_remove_file, "Missing files"),
        (_remove_signature, "no signature"),
        ("resign", "signed by an untrusted key"),
    ],
    ids=["one-byte-changed", "file-added", "file-removed", "no-signature", "re-signed-by-untrusted-key"],
)
def test_tampered_model_files_are_refused(world, registered_a, resign_with, tamper, expected, tmp_path):
    from tollgate.registry.verify import ModelVerificationError

    files = stored_files(world, registered_a["version"])
    backup = tmp_path / "backup"
    shutil.copytree(files, backup)
    try:
        (resign_with if tamper == "resign" else tamper)(files)
        result = verify(world, registered_a["version"])
        assert not result.ok
        assert any(expected in problem for problem in result.problems), result.problems
        with pytest.raises(ModelVerificationError, match="REFUSED"):
            result.raise_for_problems()
    finally:
        shutil.rmtree(files)
        shutil.copytree(backup, files)
    assert verify(world, registered_a["version"]).ok


def test_untrusted_signer_and_provenance_mismatch_are_refused(world, registered_a):
    client, version = world["client"], registered_a["version"]
    untrusted = verify(world, version, trusted=str(world["other_keys"].public_key))
    assert not untrusted.ok and "signed by an untrusted key" in untrusted.problems[0]

    client.set_model_version_tag(MODEL, version, names.TAG_DATASET_REV, "0" * 40)
    try:
        mismatch = verify(world, version)
        assert not mismatch.ok
        assert mismatch.problems == [
            f"provenance does not match: tag {names.TAG_DATASET_REV} is {world['version'].rev!r} in the "
            f"signed provenance but {'0' * 40!r} on the model version"
        ]
    finally:
        client.set_model_version_tag(MODEL, version, names.TAG_DATASET_REV, world["version"].rev)


def test_mlflow_restart_mid_registration_ends_with_exactly_one_version(
    world, mlflow_server, monkeypatch, caplog
):
    """The server is stopped right after the model is logged (before it is signed) and comes back ~20 s
    later. MLflow's own HTTP retries are off, so Tollgate's retries carry the registration through."""
    import logging

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    caplog.set_level(logging.WARNING, logger="tollgate.registry.retry")
    logged, stopped, restarted = threading.Event(), threading.Event(), threading.Event()

    def outage() -> None:
        logged.wait(timeout=600)
        mlflow_server.stop()
        stopped.set()
        mlflow_server.start()  # same port, same database and artifact store
        restarted.set()

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    steps: list[str] = []

    def on_step(step: str) -> None:
        steps.append(step)
        if step == "logged":  # the model is logged but not signed yet: take the server down now
            logged.set()
            assert stopped.wait(timeout=120)

    result = register(world, "reg-b", on_step=on_step)
    thread.join(timeout=300)
    assert restarted.is_set() and "logged" in steps
    assert any("MLflow unavailable" in r.message for r in caplog.records), "no retry happened"
    client = world["client"]
    found = client.search_model_versions(f"name = '{MODEL}' and tags.`{names.TAG_TRAINING_RUN_ID}` = 'reg-b'")
    assert [v.version for v in found] == [result["version"]]
    assert client.get_model_version_by_alias(MODEL, names.CHALLENGER).version == result["version"]
    assert verify(world, names.CHALLENGER).ok
    experiment = client.get_run(result["mlflow_run_id"]).info.experiment_id
    signed = [
        m
        for m in client.search_logged_models(
            [experiment], filter_string=f"tags.`{names.TAG_TRAINING_RUN_ID}` = 'reg-b'"
        )
        if m.tags.get(names.TAG_SIGNED) == "true"
    ]
    assert len(signed) == 1


def test_lineage_walks_to_dataset_report_run_and_checkpoints(world, registered_a):
    from tollgate.registry.lineage import model_lineage

    lineage = model_lineage(
        MODEL, registered_a["version"], str(world["keys"].public_key), tracking_uri=world["url"]
    )
    trained = world["trained"]("reg-a")
    assert lineage["signature"]["ok"] is True
    assert lineage["dataset"]["rev"] == world["version"].rev
    assert lineage["dataset"]["manifest"]["partitions"] == ["2026-04-01"]
    assert lineage["validation_report"] == {
        "uri": str(world["report"]),
        "status": "accepted",
        "partition": "2026-04-01",
    }
    assert lineage["training_run"]["mlflow_run_id"] == trained["mlflow_run_id"]
    assert lineage["training_run"]["training_run_id"] == "reg-a"
    assert lineage["training_run"]["status"] == "FINISHED"
    assert lineage["checkpoints"]["final"] == trained["final_checkpoint"]
    assert trained["final_checkpoint"] in [c["name"] for c in lineage["checkpoints"]["listed"]]
    assert lineage["model"]["links"]["training_run"].endswith(f"/runs/{trained['mlflow_run_id']}")


def test_lineage_of_a_refused_version_acts_on_none_of_its_provenance(world, registered_a, tmp_path):
    """The view's lineage walk reads repositories and checkpoint folders named in the provenance; for a
    version that fails verification it returns only the problems, and a rev never reaches git as an option."""
    from tollgate.registry.lineage import dataset_manifest, model_lineage

    untrusted = str(world["other_keys"].public_key)  # the version's signer is not trusted here
    lineage = model_lineage(MODEL, registered_a["version"], untrusted, tracking_uri=world["url"])
    assert lineage["signature"]["ok"] is False and lineage["signature"]["problems"]
    assert set(lineage) == {"model", "signature"}  # no dataset, run, report or checkpoint was read

    # What a forged provenance could carry as its dataset rev: taken as an option, git would write the
    # manifest path's output to a file of the attacker's choosing.
    target = tmp_path / "written-by-git:data"
    target.mkdir()
    assert dataset_manifest(str(world["work"] / "data-repo"), f"--output={tmp_path}/written-by-git") is None
    assert not list(target.iterdir()), "git took the rev as an option"


def trained_copy(world, run_id: str) -> dict:
    """A new training run's output (reg-a's files, renamed to ``run_id``): registering it signs anew."""
    real = world["work"] / "out" / run_id
    shutil.copytree(world["work"] / "out" / "reg-a", real)
    result = json.loads((real / "result.json").read_text())
    (real / "result.json").write_text(json.dumps({**result, "training_run_id": run_id}))
    return {**world["trained"]("reg-a"), "training_run_id": run_id, "model_uri": str(real)}


def test_airflow_task_takes_the_key_from_the_connection_and_never_prints_it(
    world, registered_a, monkeypatch, capsys, caplog
):
    """register_challenger's body: Connection tollgate_signing, Variables, mlflow_default - all from the
    environment here (AIRFLOW_CONN_* / AIRFLOW_VAR_*), as a deployment or secrets backend provides them."""
    from types import SimpleNamespace

    from tollgate.registry.keys import SigningKeyError
    from tollgate.registry.tasks import register_from_task

    keys = world["keys"]
    pem = keys.private_key.read_text()
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "host": world["url"]}))
    monkeypatch.setenv("AIRFLOW_VAR_TOLLGATE_REGISTERED_MODEL", MODEL)
    monkeypatch.setenv("AIRFLOW_VAR_TOLLGATE_TRUSTED_PUBLIC_KEYS", str(keys.public_key))
    context = {"dag": SimpleNamespace(dag_id="train_model"), "run_id": "manual__reg-a"}
    plan = {"backend": "local", "job": {"image": "unused-locally"}}

    monkeypatch.delenv("AIRFLOW_CONN_TOLLGATE_SIGNING", raising=False)
    with pytest.raises(SigningKeyError, match=r"'tollgate_signing' .* is not defined"):
        register_from_task(world["trained"]("reg-a"), plan, context)

    conn = {"conn_type": "generic", "extra": {"private_key": pem}}
    monkeypatch.setenv("AIRFLOW_CONN_TOLLGATE_SIGNING", json.dumps(conn))
    caplog.set_level(logging.DEBUG)  # every logger, every level: what a task log could show
    out = register_from_task(trained_copy(world, "reg-key"), plan, context)  # a new model: really signed
    assert out["created"] is True and out["version"] != registered_a["version"]
    printed = capsys.readouterr()
    assert f"CHALLENGER {MODEL} version {out['version']}" in printed.out
    assert "verified: signed by trusted key" in printed.out
    seen = printed.out + printed.err + caplog.text
    body = "".join(pem.splitlines()[1:-1])
    leaked = [body[i : i + 24] for i in range(0, len(body) - 24, 24) if body[i : i + 24] in seen]
    assert not leaked and "PRIVATE KEY" not in seen


def test_registration_never_signs_a_planted_model(world, registered_a, tmp_path):
    """Anyone with MLflow write access logs a READY model tagged with a training run id before that run
    registers. Registration compares its files with the trainer's output, refuses to sign it (tagged
    abandoned with the reason) and signs only a model made from what the trainer produced."""
    from tollgate.registry import logged_model as lm

    # the trainer's output of run reg-c (a copy of reg-a's, renamed to the new run)
    trained = trained_copy(world, "reg-c")
    real = Path(trained["model_uri"])
    # the attacker's files: the same, with other weights
    planted_dir = tmp_path / "planted"
    shutil.copytree(real, planted_dir)
    weights = next(p for p in planted_dir.rglob("*.pt"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    planted = lm.log_pyfunc(
        planted_dir,
        run_id=trained["mlflow_run_id"],
        tags={names.TAG_TRAINING_RUN_ID: "reg-c"},
        client=world["client"],
    )

    from tollgate.registry.register import register_signed_challenger

    steps: list[str] = []
    outcome = register_signed_challenger(
        trained,
        signing_key=world["signing_key"],
        trusted_keys=str(world["keys"].public_key),
        model_name=MODEL,
        tracking_uri=world["url"],
        on_step=steps.append,
    )
    abandoned = world["client"].get_logged_model(planted.model_id).tags
    assert "files differ from the trainer's output" in abandoned[names.TAG_ABANDONED]
    assert weights.name in abandoned[names.TAG_ABANDONED]
    assert names.TAG_SIGNED not in abandoned  # never signed
    assert any(step.startswith(f"refused logged model {planted.model_id}") for step in steps)
    result = verify(world, outcome["version"])
    assert result.ok and result.logged_model_id != planted.model_id
    files = stored_files(world, outcome["version"])
    stored = next(files.rglob(weights.name))
    assert sha256(stored) == sha256(real / weights.relative_to(planted_dir))
