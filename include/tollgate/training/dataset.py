"""Reading the curated dataset (by DVC rev, or a local parquet file) and the time-based holdout split."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tollgate.data import schema as ctr_schema
from tollgate.extensions import DatasetSchema
from tollgate.training import data_cache
from tollgate.training.errors import BadInput


@dataclass(frozen=True)
class DatasetRef:
    """Where the training data came from: logged to MLflow and result.json as its lineage."""

    repo: str | None
    rev: str | None
    path: str
    content_hash: str  # sha256 of the parquet bytes

    def as_dict(self) -> dict[str, str | None]:
        return {"repo": self.repo, "rev": self.rev, "path": self.path, "content_hash": self.content_hash}


def read_bytes_from_dvc(repo: str, rev: str, path: str) -> bytes:
    """The parquet bytes of ``path`` at git ``rev`` of a DVC repository (pulled from its remote)."""
    import dvc.api
    from dvc.config import NoRemoteError
    from dvc.exceptions import PathMissingError
    from dvc.scm import CloneError, RevError

    try:
        with dvc.api.open(path, repo=repo, rev=rev, mode="rb") as handle:
            return handle.read()
    except RevError as exc:
        raise BadInput(
            f"dataset revision {rev!r} not found in data repository {repo}: {exc}. "
            "Pass a commit or tag that exists there (`git -C <repo> tag` lists dataset versions)."
        ) from exc
    except CloneError as exc:
        raise BadInput(
            f"data repository {repo!r} cannot be opened: {exc}. Pass --data-repo as the path or URL "
            "of the git + DVC repository that holds the curated dataset."
        ) from exc
    except (PathMissingError, FileNotFoundError) as exc:
        raise BadInput(
            f"{path!r} does not exist at revision {rev!r} of data repository {repo}. "
            "Check --data-path, or that this rev holds a curated dataset."
        ) from exc
    except NoRemoteError as exc:
        raise BadInput(
            f"data repository {repo} has no DVC remote to pull {path!r} from: {exc}. "
            "Configure one (`dvc remote add -d`) and `dvc push` the dataset."
        ) from exc


def load(
    data_file: str | None,
    repo: str | None,
    rev: str | None,
    path: str,
    schema: DatasetSchema | None = None,
    cache_dir: str | None = None,
    log: Callable[[str], object] | None = None,
) -> tuple[pd.DataFrame, DatasetRef]:
    """Read the dataset and check it has the schema's columns (default: the click-through schema);
    bad input raises BadInput. A DVC dataset goes through the local cache in ``cache_dir`` (data_cache)."""
    if data_file is not None:
        file = Path(data_file)
        if not file.is_file():
            raise BadInput(f"--data-file {data_file} does not exist: pass the path of a parquet file")
        payload = file.read_bytes()
        ref = DatasetRef(repo=None, rev=None, path=str(file.resolve()), content_hash="")
    else:
        assert repo is not None and rev is not None
        payload, how = data_cache.read_through(cache_dir, repo, rev, path, read_bytes_from_dvc)
        if log is not None:
            log(f"dataset {path}@{rev} of {repo}: {len(payload)} bytes from {how}")
        ref = DatasetRef(repo=repo, rev=rev, path=path, content_hash="")
    ref = DatasetRef(ref.repo, ref.rev, ref.path, hashlib.sha256(payload).hexdigest())
    try:
        frame = pd.read_parquet(io.BytesIO(payload))
    except Exception as exc:
        raise BadInput(f"dataset {ref.path} is not a readable parquet file: {exc}") from exc
    check_columns(frame, ref.path, schema)
    return frame, ref


def check_columns(frame: pd.DataFrame, where: str, schema: DatasetSchema | None = None) -> None:
    schema = schema or ctr_schema.SCHEMA
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise BadInput(
            f"dataset {where} lacks columns {missing}: it must follow the {schema.name} schema "
            "(train on a curated dataset version produced by the dataset_ingest DAG)"
        )
    if len(frame) < 10:
        raise BadInput(f"dataset {where} has only {len(frame)} rows: too few to train and hold out")
    labels = set(pd.unique(frame[schema.label]).tolist())
    if schema.label_values and not labels <= set(schema.label_values):
        raise BadInput(
            f"dataset {where}: label column {schema.label!r} must hold {sorted(schema.label_values)}, "
            f"found {sorted(labels)}"
        )


def time_split(
    frame: pd.DataFrame, holdout_fraction: float, schema: DatasetSchema | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Order rows by (timestamp, row id) and hold out the newest fraction.

    The stable ordering makes the split, and so the training, independent of the file's row order.
    """
    schema = schema or ctr_schema.SCHEMA
    ordered = frame.sort_values([schema.timestamp, schema.row_id], kind="mergesort").reset_index(drop=True)
    n_holdout = max(1, round(len(ordered) * holdout_fraction))
    cut = len(ordered) - n_holdout
    train, holdout = ordered.iloc[:cut].reset_index(drop=True), ordered.iloc[cut:].reset_index(drop=True)
    if schema.label_values and (train[schema.label].nunique() < 2 or holdout[schema.label].nunique() < 2):
        raise BadInput(
            "the training or holdout split holds only one label class: the dataset needs both clicks and "
            "non-clicks in its older and newer parts (check the data, or change --holdout-fraction)"
        )
    return train, holdout
