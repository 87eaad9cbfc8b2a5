"""Verify → load → warm up one model version, from exactly the files that were verified.

The champion must also carry a valid signed approval attestation for the signature digest its files
verify to; a challenger needs to verify and must not carry a valid signed rejection. A refusal never
raises past the caller: ``Refused`` carries every problem, so the router keeps the last good model and
reports why.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tollgate.serving.inputs import InputSpec


class Refused(RuntimeError):
    """A version that must not be served; ``problems`` says why."""

    def __init__(self, name: str, version: str, problems: list[str]):
        self.name, self.version, self.problems = name, version, problems
        super().__init__(f"{name} version {version} refused: " + "; ".join(problems))


@dataclass(frozen=True)
class LoadedModel:
    """A verified, loaded, warmed-up model version; immutable, shared by reference."""

    name: str
    version: str
    role: str  # "champion" or "challenger"
    signature_sha256: str
    signer_key_id: str
    pyfunc: Any
    spec: InputSpec
    path: Path
    loaded_at: float
    approved_by: str | None = None

    def predict(self, model_input: Any) -> Any:
        return self.pyfunc.predict(model_input)

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "role": self.role,
            "signature_sha256": self.signature_sha256,
            "signer_key_id": self.signer_key_id,
            "approved_by": self.approved_by,
            "loaded_at": self.loaded_at,
        }


def resolve_alias(client: Any, name: str, alias: str) -> str | None:
    """The version number an alias points at now; None when the model or alias does not exist."""
    from tollgate.registry.verify import resolve_version

    version = resolve_version(client, name, alias)
    return str(version.version) if version is not None else None


def warm_up(pyfunc: Any, path: Path) -> None:
    """Predict once on the model's own input example (when it has one): a model that cannot is refused,
    and the first user request does not pay for lazy initialisation."""
    from mlflow.models import Model

    meta = Model.load(str(path))
    if not getattr(meta, "saved_input_example_info", None):
        return
    example = meta.load_input_example(str(path))
    if example is not None:
        pyfunc.predict(example)


def load_version(
    client: Any,
    name: str,
    version: str,
    *,
    role: str,
    trusted_keys: Any,
    decision_keys: Any,
    cache: Path,
) -> LoadedModel:
    """Verify ``name`` ``version``; for the champion check its approval; load and warm it up.

    Raises Refused (never loads anything it refused) with the verification or approval problems.
    """
    import mlflow.pyfunc

    from tollgate.registry import attestation
    from tollgate.registry.verify import verify_model_version

    dest = Path(cache) / name / f"{version}-p{os.getpid()}-{uuid.uuid4().hex[:8]}"
    result = verify_model_version(name, version, trusted_keys, client=client, dest=dest)
    if not result.ok:
        raise Refused(name, version, result.problems)
    approved_by = None

    def signed_decision(decision: str):
        return attestation.check_version(
            result.tags,
            decision_keys,
            decision=decision,
            model_name=name,
            version=str(result.version),
            signature_sha256=result.signature_sha256,
        )

    if role == "champion":
        check = signed_decision(attestation.APPROVED)
        if not check.ok:
            shutil.rmtree(dest, ignore_errors=True)
            raise Refused(name, version, check.problems)
        approved_by = check.predicate.get("decided_by")
    else:  # a version a gate or a human rejected (signed decision) is not put in front of users again
        rejected = signed_decision(attestation.REJECTED)
        if rejected.ok:
            shutil.rmtree(dest, ignore_errors=True)
            who = rejected.predicate.get("decided_by")
            raise Refused(
                name,
                version,
                [f"version {version} was rejected by {who}: {rejected.predicate.get('comment')}"],
            )
    try:
        pyfunc = mlflow.pyfunc.load_model(str(result.local_path))
        warm_up(pyfunc, Path(result.local_path))
    except Exception as err:  # a model that does not load or predict on its own example is not served
        shutil.rmtree(dest, ignore_errors=True)
        problem = f"verified but failed to load or warm up: {type(err).__name__}: {err}"
        raise Refused(name, version, [problem]) from err
    return LoadedModel(
        name=name,
        version=str(result.version),
        role=role,
        signature_sha256=result.signature_sha256 or "",
        signer_key_id=result.signer_key_id or "",
        pyfunc=pyfunc,
        spec=InputSpec.from_pyfunc(pyfunc),
        path=Path(result.local_path),
        loaded_at=time.time(),
        approved_by=approved_by,
    )


_OWNED = re.compile(r"^.+-p(\d+)-[0-9a-f]{8}$")  # <version>-p<pid>-<random>: who loaded the copy


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def prune_cache(cache: Path, name: str, keep: set[Path]) -> list[Path]:
    """Remove the verified copies of ``name`` that no routing table can use any more; returns them.

    A copy is removed when this process made it and it is not in ``keep``, or when the process that
    made it is gone (a restarted router). Copies of other live processes (replicas sharing the folder)
    and folders this loader did not name are left alone."""
    folder = Path(cache) / name
    kept = {Path(p).resolve() for p in keep}
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    me = os.getpid()
    for entry in entries:
        match = _OWNED.match(entry.name)
        if not match or not entry.is_dir() or entry.resolve() in kept:
            continue
        pid = int(match.group(1))
        if pid == me or not _alive(pid):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
