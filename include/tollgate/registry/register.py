"""Signed registration of a trained model as the `challenger` version, idempotent per training run.

Every step first looks at what MLflow already holds for this training run (tag
``tollgate.training_run_id``) and only does what is missing, so the whole procedure is simply run again
after a transient MLflow failure, and a rerun of the task returns the version registered before:

1. a complete version for the run exists            -> return it (no new version, no new signature)
2. a signed logged model for the run exists          -> reuse it; else adopt a half-signed one, or
   log the pyfunc, write provenance, sign, upload     (one signature per logged model, ever)
3. create the version with all tags in one request, then converge: if a retried request created a
   twin, keep the lowest version and delete the twin (it carries the very same signed files)
4. verify the version against the trusted keys, give it the alias, mark the registration complete.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollgate.registry import names
from tollgate.registry.client import mlflow_client
from tollgate.registry.keys import SigningKey, TrustedKey
from tollgate.registry.retry import retrying
from tollgate.registry.verify import logged_model_id_of

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

REQUIRED_TRAINED_KEYS = ("training_run_id", "mlflow_run_id", "model_uri", "dataset", "metrics")
REQUIRED_DATASET_KEYS = ("rev", "content_hash")


class RegistrationError(RuntimeError):
    """Registration cannot proceed; the message names the problem and the fix."""


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def versions_for_training_run(client: MlflowClient, name: str, training_run_id: str) -> list[ModelVersion]:
    found = client.search_model_versions(
        f"name = '{_quote(name)}' and tags.`{names.TAG_TRAINING_RUN_ID}` = '{_quote(training_run_id)}'"
    )
    return sorted(found, key=lambda v: int(v.version))


def _converge(client: MlflowClient, name: str, versions: list[ModelVersion]) -> ModelVersion:
    """Keep the lowest version of a training run; delete twins a retried create request left behind."""
    keep, twins = versions[0], versions[1:]
    for twin in twins:
        log.warning(
            "Model %s version %s duplicates version %s (same training run %s, created by a retried request): "
            "deleting the duplicate",
            name,
            twin.version,
            keep.version,
            twin.tags.get(names.TAG_TRAINING_RUN_ID),
        )
        client.delete_model_version(name, twin.version)
    return keep


def normalize_trained(trained: dict[str, Any]) -> dict[str, Any]:
    """Accept the training task's result with a nested ``dataset`` or with the flat asset-extra keys
    (rev, content_hash, data_repo, data_path) that ``publish_trained_model`` returns."""
    out = dict(trained)
    if not out.get("dataset"):
        out["dataset"] = {
            "repo": trained.get("data_repo"),
            "rev": trained.get("rev"),
            "path": trained.get("data_path"),
            "content_hash": trained.get("content_hash"),
        }
    return out


def _check_trained(trained: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED_TRAINED_KEYS if not trained.get(k)]
    missing += [f"dataset.{k}" for k in REQUIRED_DATASET_KEYS if not (trained.get("dataset") or {}).get(k)]
    if missing:
        raise RegistrationError(
            f"The trained-model info lacks {', '.join(missing)}. Pass the dict the training task returns "
            "(training_run_id, mlflow_run_id, model_uri, dataset {repo, rev, path, content_hash}, "
            "metrics, ...)."
        )


def fetch_trained_dir(model_uri: str, dest: Path, training_run_id: str) -> Path:
    """The trainer's output folder (local folder or s3://, read like the trainer writes it), checked to
    belong to ``training_run_id``."""
    import json

    from tollgate.storage import Folder

    storage = Folder(model_uri)
    if storage.local_root is not None:
        local = storage.local_root
    else:
        local = dest / "trained-download"
        local.mkdir(parents=True, exist_ok=True)
        for name in storage.list():
            (local / name).write_bytes(storage.read(name))
    result_file = local / "result.json"
    if not result_file.is_file():
        raise RegistrationError(
            f"{model_uri} holds no result.json: it is not the output of a finished training run. "
            "Pass the model_uri the training task returned."
        )
    recorded = json.loads(result_file.read_text()).get("training_run_id")
    if recorded and recorded != training_run_id:
        raise RegistrationError(
            f"{model_uri}/result.json belongs to training run {recorded!r}, not {training_run_id!r}: "
            "refusing to register another run's model under this run's name."
        )
    return Path(local)


def _signed_tags(model: LoggedModel) -> dict[str, str]:
    return {k: model.tags[k] for k in names.SIGNED_TAGS if k in model.tags}


def _find_or_make_signed_model(
    client: MlflowClient,
    trained: dict[str, Any],
    key: SigningKey,
    statement_inputs: dict[str, Any],
    work: Path,
    on_step: Callable[[str], None],
) -> LoggedModel:
    """The signed logged model of this training run: found, adopted, or logged and signed now."""
    from mlflow.entities import LoggedModelStatus

    from tollgate.registry import logged_model as lm
    from tollgate.registry.signing import read_bundle, sha256_file, verify_model_dir

    training_run_id = trained["training_run_id"]
    run = client.get_run(trained["mlflow_run_id"])
    candidates = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"tags.`{names.TAG_TRAINING_RUN_ID}` = '{_quote(training_run_id)}'",
    )
    candidates = sorted(
        (m for m in candidates if m.status == LoggedModelStatus.READY and names.TAG_ABANDONED not in m.tags),
        key=lambda m: m.creation_timestamp,
    )
    for model in candidates:
        if model.tags.get(names.TAG_SIGNED) == "true":
            on_step("found signed model")
            return model
    trained_dir = fetch_trained_dir(trained["model_uri"], work, training_run_id) if candidates else None
    for model in candidates:  # an earlier attempt stopped between upload and tagging, or before signing
        files = lm.download(model, work / f"adopt-{model.model_id}", client.tracking_uri)
        differ = trained_files_differ(files, trained_dir)
        if differ:  # not what the trainer produced (planted, or a stale attempt): never sign it
            on_step(f"refused logged model {model.model_id}: {differ}")
            client.set_logged_model_tags(model.model_id, {names.TAG_ABANDONED: differ[:4000]})
            continue
        signature = files / names.SIGNATURE_FILE
        if signature.exists():
            own = {key.key_id: TrustedKey(key.key_id, _public_pem(key), "signing key")}
            checked = verify_model_dir(files, own)
            if not checked.ok or not (files / names.PROVENANCE_FILE).exists():
                client.set_logged_model_tags(
                    model.model_id, {names.TAG_ABANDONED: "signature does not verify"}
                )
                continue
            hint, _ = read_bundle(signature)
            tags = _tags_for(
                trained, sha256_file(signature), hint, sha256_file(files / names.PROVENANCE_FILE)
            )
        else:
            on_step("signing")
            info, provenance_sha256 = lm.sign_logged_model(
                model, client=client, key=key, statement_inputs=statement_inputs
            )
            tags = _tags_for(trained, info.sha256, info.key_id, provenance_sha256)
        return _mark_signed(client, model, tags, on_step)

    on_step("logging model")
    trained_dir = trained_dir or fetch_trained_dir(trained["model_uri"], work, training_run_id)
    model = lm.log_pyfunc(
        trained_dir,
        run_id=trained["mlflow_run_id"],
        tags={names.TAG_TRAINING_RUN_ID: training_run_id},
        client=client,
    )
    on_step("logged")
    info, provenance_sha256 = lm.sign_logged_model(
        model, client=client, key=key, statement_inputs=statement_inputs
    )
    tags = _tags_for(trained, info.sha256, info.key_id, provenance_sha256)
    return _mark_signed(client, model, tags, on_step)


def trained_files_differ(model_files: Path, trained_dir: Path) -> str:
    """Why a logged model's trainer files are not exactly the trainer's output (sha256 per file), or ""."""
    from tollgate.registry.signing import sha256_file

    def digests(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*") if p.is_file()}

    folders = [d for d in model_files.rglob(names.TRAINED_FILES_DIR) if d.is_dir()]
    if len(folders) != 1:
        return f"the logged model holds {len(folders)} '{names.TRAINED_FILES_DIR}' folders, expected 1"
    expected, found = digests(trained_dir), digests(folders[0])
    changed = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    if changed:
        return "files differ from the trainer's output (sha256): " + ", ".join(changed[:10])
    return ""


def _mark_signed(
    client: MlflowClient, model: LoggedModel, tags: dict[str, str], on_step: Callable
) -> LoggedModel:
    """Tag the logged model as completely signed (the marker later attempts trust) and re-read it."""
    client.set_logged_model_tags(model.model_id, {**tags, names.TAG_SIGNED: "true"})
    on_step("signed")
    return client.get_logged_model(model.model_id)


def _public_pem(key: SigningKey) -> bytes:
    from tollgate.registry.keys import public_pem

    return public_pem(key.public_key)


def _tags_for(
    trained: dict[str, Any], signature_sha256: str, key_id: str, provenance_sha256: str
) -> dict[str, str]:
    return {
        names.TAG_TRAINING_RUN_ID: trained["training_run_id"],
        names.TAG_SIGNATURE_SHA256: signature_sha256,
        names.TAG_SIGNER_KEY_ID: key_id,
        names.TAG_PROVENANCE_SHA256: provenance_sha256,
        names.TAG_DATASET_REV: str(trained["dataset"]["rev"]),
        names.TAG_DATASET_CONTENT_HASH: str(trained["dataset"]["content_hash"]),
    }


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(
                name, description="Tollgate click-through model. Every version is signed; see its provenance."
            )
        except MlflowException as again:
            if again.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def _result(version: ModelVersion, alias: str, created: bool) -> dict[str, Any]:
    tags = version.tags
    return {
        "model_name": version.name,
        "version": str(version.version),
        "alias": alias,
        "model_uri": f"models:/{version.name}/{version.version}",
        "signature_digest": tags.get(names.TAG_SIGNATURE_SHA256),
        "signer_key_id": tags.get(names.TAG_SIGNER_KEY_ID),
        "provenance_digest": tags.get(names.TAG_PROVENANCE_SHA256),
        "dataset_rev": tags.get(names.TAG_DATASET_REV),
        "training_run_id": tags.get(names.TAG_TRAINING_RUN_ID),
        "mlflow_run_id": version.run_id,
        "logged_model_id": logged_model_id_of(version),
        "created": created,
    }


def _register_once(
    client: MlflowClient,
    trained: dict[str, Any],
    *,
    model_name: str,
    key: SigningKey,
    trusted_keys: dict[str, TrustedKey],
    alias: str,
    statement_inputs: dict[str, Any],
    on_step: Callable[[str], None],
) -> dict[str, Any]:
    from tollgate.registry.verify import verify_model_version

    training_run_id = trained["training_run_id"]
    existing = versions_for_training_run(client, model_name, training_run_id)
    created = False
    if existing:
        version = _converge(client, model_name, existing)
        if version.tags.get(names.TAG_REGISTRATION) == names.REGISTRATION_COMPLETE:
            on_step("already registered")
            return _result(version, alias, created=False)
        on_step("completing earlier registration")
    else:
        _ensure_registered_model(client, model_name)
        with tempfile.TemporaryDirectory(prefix="tollgate-register-") as tmp:
            model = _find_or_make_signed_model(client, trained, key, statement_inputs, Path(tmp), on_step)
        # Re-check right before creating: a concurrent or earlier attempt may have won meanwhile.
        existing = versions_for_training_run(client, model_name, training_run_id)
        if not existing:
            on_step("creating version")
            client.create_model_version(
                model_name,
                source=f"models:/{model.model_id}",
                run_id=trained["mlflow_run_id"],
                tags=_signed_tags(model),
                model_id=model.model_id,
                description=f"Training run {training_run_id}, dataset rev {trained['dataset']['rev']}",
            )
            created = True
        version = _converge(
            client, model_name, versions_for_training_run(client, model_name, training_run_id)
        )
    on_step("verifying")
    result = verify_model_version(model_name, version.version, trusted_keys, client=client)
    if not result.ok:
        raise RegistrationError(
            f"Model {model_name} version {version.version} was registered but does not verify, so it is not "
            f"made the {alias}: " + "; ".join(result.problems)
        )
    client.set_registered_model_alias(model_name, alias, version.version)
    client.set_model_version_tag(
        model_name, version.version, names.TAG_REGISTRATION, names.REGISTRATION_COMPLETE
    )
    on_step("registered")
    return _result(client.get_model_version(model_name, version.version), alias, created=created)


def register_signed_challenger(
    trained: dict[str, Any],
    *,
    signing_key: SigningKey,
    trusted_keys: Any = None,
    model_name: str | None = None,
    tracking_uri: str | None = None,
    training_image: str | None = None,
    airflow: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    code: dict[str, Any] | None = None,
    alias: str = names.CHALLENGER,
    deadline_s: float = 300.0,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Log, sign and register the model of ``trained`` (the training task's result) as ``alias``.

    Returns {model_name, version, alias, model_uri, signature_digest, signer_key_id, provenance_digest,
    dataset_rev, training_run_id, mlflow_run_id, logged_model_id, created}. ``created`` is False when the
    training run was registered before (the same version is returned, nothing is signed again).
    """
    from tollgate.config import default_for
    from tollgate.registry.keys import resolve_trusted_keys
    from tollgate.registry.provenance import code_version

    trained = normalize_trained(trained)
    _check_trained(trained)
    client = mlflow_client(tracking_uri)
    model_name = model_name or default_for("tollgate_registered_model")
    trusted = resolve_trusted_keys(trusted_keys)
    if signing_key.key_id not in trusted:
        raise RegistrationError(
            f"The signing key (id {signing_key.key_id}) is not among the trusted public keys, so nothing it "
            "signs would verify. Add its public key to the Variable 'tollgate_trusted_public_keys'."
        )
    step = on_step or (lambda name: log.info("registration of %s: %s", trained["training_run_id"], name))

    def inputs() -> dict[str, Any]:
        run = client.get_run(trained["mlflow_run_id"])
        return {
            "trained": trained,
            "registered_model": model_name,
            "params": params if params is not None else dict(run.data.params),
            "code": code or trained.get("code") or code_version(),
            "training_image": training_image or trained.get("training_image") or "unknown",
            "airflow": airflow or {},
        }

    def attempt() -> dict[str, Any]:
        return _register_once(
            client,
            trained,
            model_name=model_name,
            key=signing_key,
            trusted_keys=trusted,
            alias=alias,
            statement_inputs=inputs(),
            on_step=step,
        )

    result = retrying(f"register training run {trained['training_run_id']}", attempt, deadline_s=deadline_s)
    log.info(
        "Model %s version %s is the %s (signature sha256 %s, signer %s, provenance sha256 %s, "
        "dataset rev %s)%s",
        result["model_name"],
        result["version"],
        alias,
        result["signature_digest"],
        result["signer_key_id"],
        result["provenance_digest"],
        result["dataset_rev"],
        "" if result["created"] else " - registered before, returned as is",
    )
    return result
