"""The one verification every gate and the serving router use before trusting a model version.

``verify_model_version(name, "challenger")`` resolves the version (number or alias), downloads its files
exactly as stored, checks them against ``model.sig`` signed by a trusted key, and checks the signed
provenance against the version (tags, run, logged model, registered name). The result names every
problem found; ``result.raise_for_problems()`` turns them into one clear error. Pass ``dest`` to keep the
verified files and load the model from there, so what runs is what was verified.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollgate.registry import names
from tollgate.registry.keys import resolve_trusted_keys
from tollgate.registry.retry import retrying

if TYPE_CHECKING:
    from mlflow import MlflowClient


class ModelVerificationError(RuntimeError):
    """A model version failed verification; ``.result`` holds the details."""

    def __init__(self, result: VerificationResult):
        self.result = result
        super().__init__(result.summary())


@dataclass
class VerificationResult:
    ok: bool
    model_name: str
    requested: str  # version number or alias asked for
    version: str | None = None
    problems: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    signer_key_id: str | None = None
    signature_sha256: str | None = None
    provenance_sha256: str | None = None
    provenance: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    logged_model_id: str | None = None
    files: list[str] = field(default_factory=list)
    local_path: Path | None = None  # the verified files, when ``dest`` was given

    def summary(self) -> str:
        target = f"{self.model_name} {self.requested}" + (
            f" (version {self.version})" if self.version and self.version != self.requested else ""
        )
        if self.ok:
            return f"Model {target} verified: signed by trusted key {self.signer_key_id}, provenance matches."
        return f"Model {target} REFUSED: " + "; ".join(self.problems)

    def describe(self) -> str:
        """The summary plus the provenance facts a reviewer asks for, for task logs and the demo."""
        lines = [self.summary()]
        predicate = (self.provenance or {}).get("predicate") or {}
        if predicate:
            dataset, training = predicate.get("dataset", {}), predicate.get("training", {})
            airflow, code = predicate.get("airflow", {}), predicate.get("code", {})
            metrics = ", ".join(
                f"{k} {v:.4f}" if isinstance(v, int | float) else f"{k} {v}"
                for k, v in sorted((predicate.get("metrics") or {}).items())
            )
            lines += [
                f"  dataset        rev {dataset.get('rev')} (content sha256 {dataset.get('content_hash')})",
                f"  code           commit {code.get('git_commit')}{' (dirty)' if code.get('dirty') else ''}",
                f"  training image {predicate.get('training_image')}",
                f"  training run   {training.get('training_run_id')}: {training.get('attempts')} attempt(s), "
                f"{training.get('preemptions')} preemption(s), "
                f"final checkpoint {training.get('final_checkpoint')}",
                f"  MLflow run     {(predicate.get('mlflow') or {}).get('run_id')}; Airflow "
                f"{airflow.get('dag_id')} / {airflow.get('run_id')}",
                f"  metrics        {metrics}",
                f"  signature      sha256 {self.signature_sha256}",
                f"  provenance     sha256 {self.provenance_sha256}",
            ]
        return "\n".join(lines)

    def raise_for_problems(self) -> VerificationResult:
        if not self.ok:
            raise ModelVerificationError(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["local_path"] = str(self.local_path) if self.local_path else None
        return data


def logged_model_id_of(version: Any) -> str | None:
    """The logged model a version was registered from (the OSS server returns it only in ``source``)."""
    if getattr(version, "model_id", None):
        return version.model_id
    source = version.source or ""
    if source.startswith("models:/m-") and "/" not in source[len("models:/") :]:
        return source[len("models:/") :]
    return None


def resolve_version(client: MlflowClient, name: str, version_or_alias: str | int):
    """The ModelVersion for a number or an alias; None when it does not exist."""
    from mlflow.exceptions import MlflowException

    ref = str(version_or_alias)
    try:
        if ref.isdigit():
            return client.get_model_version(name, ref)
        return client.get_model_version_by_alias(name, ref)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def verify_files(
    model_dir: Path, version: Any, trusted_keys: dict, result: VerificationResult
) -> VerificationResult:
    """Signature + provenance checks of downloaded files against a ModelVersion; fills ``result``."""
    from tollgate.registry.provenance import check_statement
    from tollgate.registry.signing import sha256_file, verify_model_dir

    folder = verify_model_dir(model_dir, trusted_keys)
    result.problems.extend(folder.problems)
    result.signer_key_id = folder.signer_key_id
    result.signature_sha256 = folder.signature_sha256
    result.files = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    statement, provenance_problems = check_statement(
        model_dir,
        version_name=version.name,
        version_run_id=version.run_id,
        version_model_id=logged_model_id_of(version),
        tags=dict(version.tags),
        signer_key_id=folder.signer_key_id,
        signature_sha256=folder.signature_sha256,
    )
    result.provenance = statement
    if (model_dir / names.PROVENANCE_FILE).is_file():
        result.provenance_sha256 = sha256_file(model_dir / names.PROVENANCE_FILE)
    if folder.signature_sha256 is not None or statement is not None:
        result.problems.extend(provenance_problems)
    result.ok = not result.problems
    return result


def verify_model_version(
    name: str,
    version_or_alias: str | int,
    trusted_keys: Any = None,
    *,
    client: MlflowClient | None = None,
    tracking_uri: str | None = None,
    dest: Path | None = None,
    deadline_s: float = 120.0,
) -> VerificationResult:
    """Verify model ``name`` at ``version_or_alias`` (e.g. "3" or "challenger") against ``trusted_keys``
    (loaded keys, paths or PEM text; default: the configured trusted keys). Never raises for a bad model:
    read ``result.ok`` / ``result.problems``, or call ``result.raise_for_problems()``."""
    from tollgate.registry.client import mlflow_client
    from tollgate.registry.logged_model import download

    trusted = resolve_trusted_keys(trusted_keys)
    client = client or mlflow_client(tracking_uri)
    result = VerificationResult(ok=False, model_name=name, requested=str(version_or_alias))

    version = retrying(
        f"look up {name} {version_or_alias}", lambda: resolve_version(client, name, version_or_alias)
    )
    if version is None:
        result.problems.append(f"model {name} has no version or alias {version_or_alias!r}")
        return result
    result.version = str(version.version)
    result.aliases = list(getattr(version, "aliases", []) or [])
    result.tags = dict(version.tags)
    result.run_id, result.logged_model_id = version.run_id, logged_model_id_of(version)
    if not result.logged_model_id:
        result.problems.append(
            f"version {version.version} was not registered from a logged model (source {version.source}); "
            "Tollgate only trusts versions made by its signed registration"
        )
        return result

    work = Path(tempfile.mkdtemp(prefix="tollgate-verify-"))
    try:
        logged = retrying(
            f"look up logged model {result.logged_model_id}",
            lambda: client.get_logged_model(result.logged_model_id),
        )
        files = retrying(
            f"download {name} version {version.version}",
            lambda: download(logged, Path(tempfile.mkdtemp(dir=work)), client.tracking_uri),
            deadline_s=deadline_s,
        )
        verify_files(files, version, trusted, result)
        if dest is not None and result.ok:  # keep exactly the verified files; a refused model is not kept
            dest = Path(dest)
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(files), dest)
            result.local_path = dest
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def load_verified_model(
    name: str, version_or_alias: str | int, dest: Path, trusted_keys: Any = None, **kwargs: Any
) -> tuple[Any, VerificationResult]:
    """Verify, then load the pyfunc from the verified files (raises ModelVerificationError if refused)."""
    import mlflow.pyfunc

    result = verify_model_version(
        name, version_or_alias, trusted_keys, dest=dest, **kwargs
    ).raise_for_problems()
    return mlflow.pyfunc.load_model(str(result.local_path)), result
