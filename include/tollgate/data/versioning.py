"""Versions of the curated training set: a git + DVC data repository.

Layout of the data repository::

    data/partitions/dt=YYYY-MM-DD.parquet(.dvc)   clean rows of each ingested day (DVC)
    data/ctr_curated.parquet(.dvc)                the training set: the last N clean days (DVC)
    data/manifest.json                            what the version holds (git)

Each version is a commit plus a tag naming its interval (``data-2024-03-01``; a re-delivered day
with different content gets ``data-2024-03-01-v2``...). Data goes to the DVC remote before the
commit exists, so every tag can be fetched later::

    dvc get <data_repo> data/ctr_curated.parquet --rev data-2024-03-01
    dvc.api.open("data/ctr_curated.parquet", repo=<data_repo>, rev="data-2024-03-01")

Publishing an interval whose curated content is unchanged returns the existing version. Writers
are serialised by a file lock next to the repository (backfills may run ingests in parallel).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollgate import storage
from tollgate.data.generator import parse_day

if TYPE_CHECKING:
    from tollgate.extensions import DatasetSchema

TAG_PREFIX = "data-"
PARTITIONS_DIR = "data/partitions"
MANIFEST_PATH = "data/manifest.json"
REMOTE_NAME = "storage"
LOCK_TIMEOUT_S = 900

# DVC must never phone home (no internet; no surprises in production either).
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


class VersioningError(RuntimeError):
    """The data repository cannot take this version (bad configuration, failed git/DVC step)."""


@dataclass
class DatasetVersion:
    """One version of the curated training set; ``as_extra()`` is the Asset event's ``extra``."""

    rev: str
    tag: str
    partition: str
    content_hash: str
    rows: int
    partition_rows: int
    quarantined_rows: int
    window_start: str
    window_end: str
    window_days: int
    partitions: list[str]
    data_repo: str
    data_path: str
    dvc_remote: str
    dvc_md5: str = ""
    created: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def as_extra(self) -> dict[str, Any]:
        keys = (
            "rev",
            "tag",
            "content_hash",
            "rows",
            "partition_rows",
            "quarantined_rows",
            "window_start",
            "window_end",
            "partition",
            "data_repo",
            "data_path",
            "dvc_remote",
        )
        return {k: getattr(self, k) for k in keys}


def _dvc(path: Path) -> Any:
    """The DVC repo at ``path``, quiet: its hints ("To track the changes with git, run ...") are for
    people at a shell, and this module does the git part itself."""
    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.WARNING)
    repo = Repo(str(path))
    repo.scm_context.quiet = True
    return repo


def _git(repo: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise VersioningError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout.strip()


class DataRepo:
    """The data repository at ``path`` (a local folder / shared volume) with DVC remote ``remote``."""

    def __init__(self, path: str | Path, remote: str, window_days: int = 7, chunk_rows: int | None = None):
        if storage.is_remote(str(path)):
            raise VersioningError(
                f"Data repository {path} must be a folder this worker can write (a local path or a "
                "shared volume); the DVC *remote* is where the data goes to object storage (s3://...)."
            )
        if window_days < 1:
            raise VersioningError(
                f"Window of {window_days} days: the Variable tollgate_window_days must be >= 1."
            )
        self.path = Path(path).expanduser().resolve()
        self.remote = remote if storage.is_remote(remote) else str(Path(remote).expanduser().resolve())
        self.window_days = window_days
        self.chunk_rows = chunk_rows  # rows held at once while the window is built (None: the default)

    # ---- set-up -----------------------------------------------------------------------------
    def lock(self) -> Any:
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S)

    def ensure(self) -> None:
        """Create the repository and point DVC at the remote (idempotent; call under the lock)."""
        from dvc.repo import Repo

        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / ".git").exists():
            _git(self.path, "init", "-q", "-b", "main")
        _git(self.path, "config", "user.name", "Tollgate ingest")
        _git(self.path, "config", "user.email", "ingest@tollgate.invalid")
        if not (self.path / ".dvc").exists():
            logging.getLogger("dvc").setLevel(logging.WARNING)
            Repo.init(str(self.path)).close()
        with _dvc(self.path) as repo, repo.config.edit() as conf:
            conf["core"]["remote"] = REMOTE_NAME
            conf["core"]["analytics"] = False
            conf["core"]["check_update"] = False
            remote_conf: dict[str, Any] = {"url": self.remote}
            endpoint = storage.s3_endpoint_url()
            if self.remote.startswith("s3://") and endpoint:
                remote_conf["endpointurl"] = endpoint
            conf["remote"][REMOTE_NAME] = remote_conf
        with _dvc(self.path) as repo, repo.config.edit("local") as conf:
            # DVC's state/index inside the repo's ignored tmp folder, not in a machine-wide cache.
            conf["core"]["site_cache_dir"] = str(self.path / ".dvc" / "tmp" / "site-cache")
        (self.path / PARTITIONS_DIR).mkdir(parents=True, exist_ok=True)
        _git(self.path, "add", ".dvc/config", ".dvc/.gitignore", ".dvcignore")
        if _git(self.path, "diff", "--cached", "--name-only"):
            _git(self.path, "commit", "-q", "-m", f"Configure DVC remote {REMOTE_NAME} -> {self.remote}")

    # ---- reading ----------------------------------------------------------------------------
    def versions(self) -> list[dict[str, Any]]:
        """Manifests of all versions, oldest commit first (each with its ``rev`` and ``tag``)."""
        if not (self.path / ".git").exists():
            return []
        refs = _git(
            self.path, "for-each-ref", f"refs/tags/{TAG_PREFIX}*", "--format=%(refname:short) %(*objectname)"
        )
        if not refs:
            return []
        history = _git(self.path, "rev-list", "--reverse", "--all").splitlines()
        position = {sha: index for index, sha in enumerate(history)}
        tagged = sorted(
            (position[sha], tag, sha) for tag, sha in (line.split() for line in refs.splitlines())
        )
        found = []
        for _pos, tag, sha in tagged:
            manifest = json.loads(_git(self.path, "show", f"{tag}:{MANIFEST_PATH}"))
            manifest["tag"] = tag
            manifest["rev"] = sha
            found.append(manifest)
        return found

    def _existing(self, partition: str, content_hash: str) -> dict[str, Any] | None:
        for manifest in self.versions():
            if manifest["partition"] == partition and manifest["content_hash"] == content_hash:
                return manifest
        return None

    # ---- writing ----------------------------------------------------------------------------
    def publish(
        self,
        partition: str | date,
        clean_uri: str,
        quarantined_rows: int,
        gate: dict[str, Any] | None = None,
        log: Any = print,
    ) -> DatasetVersion:
        """Version the curated window ending at ``partition`` (clean rows at ``clean_uri``)."""
        import tempfile

        day = parse_day(partition)
        with self.lock(), tempfile.TemporaryDirectory(prefix="tollgate-curate-") as work:
            self.ensure()
            new_file = Path(work) / "partition.parquet"
            _fetch(clean_uri, new_file)
            window = self._window(day, new_file)
            curated = Path(work) / "curated.parquet"
            curate([file for _dt, file in window], curated, self.chunk_rows)
            content_hash = storage.sha256_of(str(curated))
            existing = self._existing(day.isoformat(), content_hash)
            if existing:
                log(f"Unchanged content for dt={day}: existing version {existing['tag']} ({existing['rev']})")
                return self._version(existing, created=False)
            adopted = self._adopt_untagged_head(day, content_hash, log)
            if adopted:
                return self._version(adopted, created=True)
            return self._commit(day, window, curated, content_hash, quarantined_rows, gate or {}, log)

    def _window(self, day: date, new_file: Path) -> list[tuple[str, Path]]:
        """(dt, clean Parquet file) of the window's days that have clean data, oldest first."""
        days = [(day - timedelta(days=offset)).isoformat() for offset in range(self.window_days - 1, -1, -1)]
        missing = [
            str(self.path / PARTITIONS_DIR / f"dt={dt}.parquet")
            for dt in days[:-1]
            if (self.path / PARTITIONS_DIR / f"dt={dt}.parquet.dvc").exists()
            and not (self.path / PARTITIONS_DIR / f"dt={dt}.parquet").exists()
        ]
        if missing:  # a fresh checkout: fetch the earlier days from the remote
            with _dvc(self.path) as repo:
                repo.pull(targets=missing)
        window = []
        for dt in days[:-1]:
            file = self.path / PARTITIONS_DIR / f"dt={dt}.parquet"
            if file.exists():
                window.append((dt, file))
        window.append((day.isoformat(), new_file))
        return window

    def _commit(
        self,
        day: date,
        window: list[tuple[str, Path]],
        curated: Path,
        content_hash: str,
        quarantined_rows: int,
        gate: dict[str, Any],
        log: Any,
    ) -> DatasetVersion:
        partition_rel = f"{PARTITIONS_DIR}/dt={day.isoformat()}.parquet"
        shutil.copyfile(window[-1][1], self.path / partition_rel)
        curated_path = _schema().curated_path
        (self.path / curated_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(curated, self.path / curated_path)
        rows = _rows(curated)
        later = [m["partition"] for m in self.versions() if m["partition"] > day.isoformat()]
        if later:
            log(
                f"Note: versions for later days already exist ({', '.join(sorted(set(later)))}); this "
                f"version of dt={day} is committed after them. Each tag still names its own interval."
            )
        manifest = {
            "partition": day.isoformat(),
            "window_start": window[0][0],
            "window_end": day.isoformat(),
            "window_days": self.window_days,
            "partitions": [dt for dt, _ in window],
            "rows": rows,
            "partition_rows": _rows(window[-1][1]),
            "quarantined_rows": int(quarantined_rows),
            "content_hash": content_hash,
            "data_path": curated_path,
            "dvc_remote": self.remote,
            "gate": {k: gate.get(k) for k in ("input_uri", "input_sha256", "key", "status", "report_uri")},
        }
        (self.path / MANIFEST_PATH).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        with _dvc(self.path) as repo:
            # DVC resolves targets against the current directory: give absolute paths.
            targets = [str(self.path / partition_rel), str(self.path / curated_path)]
            repo.add(targets)
            # Data reaches the remote before the commit exists: no tag ever points at missing data.
            repo.push(targets=targets)
        _git(
            self.path,
            "add",
            f"{partition_rel}.dvc",
            f"{curated_path}.dvc",
            MANIFEST_PATH,
            f"{PARTITIONS_DIR}/.gitignore",
            str(Path(curated_path).parent / ".gitignore"),
        )
        tag = self._free_tag(day)
        message = (
            f"Curated dataset for dt={day}: window {manifest['window_start']}..{manifest['window_end']}, "
            f"{rows} rows, {quarantined_rows} rows of dt={day} quarantined"
        )
        _git(self.path, "commit", "-q", "-m", message)
        _git(self.path, "tag", "-a", tag, "-m", message)
        manifest.update(tag=tag, rev=_git(self.path, "rev-parse", "HEAD"))
        log(f"New dataset version {tag} ({manifest['rev'][:12]}): {message}")
        return self._version(manifest, created=True)

    def _adopt_untagged_head(self, day: date, content_hash: str, log: Any) -> dict[str, Any] | None:
        """A writer that crashed between ``git commit`` and ``git tag`` left HEAD untagged. When that
        commit's manifest is exactly this version (same day, same content), tag it instead of committing
        again (which would fail with nothing to commit, on every retry)."""
        head = _git(self.path, "rev-parse", "--verify", "-q", "HEAD", check=False)
        if not head or _git(self.path, "tag", "--points-at", head):
            return None
        shown = subprocess.run(
            ["git", "-C", str(self.path), "show", f"{head}:{MANIFEST_PATH}"], capture_output=True, text=True
        )
        try:
            manifest = json.loads(shown.stdout) if shown.returncode == 0 else None
        except ValueError:
            manifest = None
        if not manifest or (manifest.get("partition"), manifest.get("content_hash")) != (
            day.isoformat(),
            content_hash,
        ):
            return None
        tag = self._free_tag(day)
        message = _git(self.path, "log", "-1", "--format=%B", head)
        _git(self.path, "tag", "-a", tag, "-m", message, head)
        manifest.update(tag=tag, rev=head)
        log(f"Adopted the untagged commit {head[:12]} of an interrupted attempt as dataset version {tag}")
        return manifest

    def _free_tag(self, day: date) -> str:
        base = f"{TAG_PREFIX}{day.isoformat()}"
        taken = set(_git(self.path, "tag", "--list", f"{base}*").splitlines())
        if base not in taken:
            return base
        n = 2
        while f"{base}-v{n}" in taken:
            n += 1
        return f"{base}-v{n}"

    def _version(self, manifest: dict[str, Any], created: bool) -> DatasetVersion:
        dvc_file = _git(self.path, "show", f"{manifest['rev']}:{manifest['data_path']}.dvc")
        md5 = next((line.split(":", 1)[1].strip() for line in dvc_file.splitlines() if "md5:" in line), "")
        return DatasetVersion(
            rev=manifest["rev"],
            tag=manifest["tag"],
            partition=manifest["partition"],
            content_hash=manifest["content_hash"],
            rows=manifest["rows"],
            partition_rows=manifest["partition_rows"],
            quarantined_rows=manifest["quarantined_rows"],
            window_start=manifest["window_start"],
            window_end=manifest["window_end"],
            window_days=manifest["window_days"],
            partitions=manifest["partitions"],
            data_repo=str(self.path),
            data_path=manifest["data_path"],
            dvc_remote=manifest["dvc_remote"],
            dvc_md5=md5,
            created=created,
        )


def _schema() -> DatasetSchema:
    """The active example's dataset schema (env TOLLGATE_EXAMPLE, read at call time)."""
    from tollgate import extensions

    return extensions.active().dataset.schema


def _rows(parquet: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(parquet).metadata.num_rows


def _fetch(uri: str, local: Path) -> None:
    """Copy the object at ``uri`` to the local file ``local``, in blocks."""
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        raise storage.StorageError(f"No object at {uri}.")
    fs.get_file(path, str(local))


def curate(partitions: list[Path], out: Path, chunk_rows: int | None = None) -> None:
    """Write the curated Parquet of clean partitions to ``out``: schema dtypes, ordered by time then row id.

    The bytes are those of sorting the concatenated partitions (stable: equal keys keep their order) and
    writing them in one ``write_table`` call, but at most about ``chunk_rows`` rows are held at once (a
    distribution sort): the time range is cut into buckets of at most ``chunk_rows`` rows from a histogram
    of the time column, each partition is read chunk by chunk and its rows appended to their bucket's
    temporary file, then the buckets are sorted one at a time, oldest first, and written out in row groups
    (``chunks.RowGroupWriter``). A bucket is larger than ``chunk_rows`` only when more rows than that share
    one histogram bin (1/4096 of the time range). Rows without a time come last, as pandas sorts them.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tollgate.data.chunks import RowGroupWriter, chunk_size, iter_chunks

    schema = _schema()
    columns = dict(schema.columns)
    target = pa.Schema.from_pandas(
        pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()}), preserve_index=False
    )
    files = [pq.ParquetFile(p) for p in partitions]
    total = sum(f.metadata.num_rows for f in files)
    size = chunk_size(chunk_rows, total)
    sort_keys = [(schema.timestamp, "ascending", "at_end"), (schema.row_id, "ascending", "at_end")]

    def chunks(columns_: list[str] | None = None):
        for file in files:
            yield from iter_chunks(file, size, columns_)

    def times(table: pa.Table) -> np.ndarray:
        stamps = table.column(schema.timestamp).cast(target.field(schema.timestamp).type)
        return pc.fill_null(stamps.cast(pa.int64()), np.iinfo(np.int64).max).to_numpy()

    def sorted_rows(table: pa.Table) -> pa.Table:
        return table.take(pc.sort_indices(table, sort_keys=sort_keys))

    writer = RowGroupWriter(str(out), target, compression="snappy")
    try:
        if total <= size:  # the whole window fits one chunk
            window = [t.select(list(columns)).cast(target) for t in chunks()]
            writer.write(sorted_rows(pa.concat_tables(window)))
            return
        edges = _bucket_edges(lambda: (times(t) for t in chunks([schema.timestamp])), size)
        with tempfile.TemporaryDirectory(prefix="tollgate-buckets-", dir=out.parent) as work:
            buckets: dict[int, Any] = {}
            for table in chunks():
                table = table.select(list(columns)).cast(target)
                bucket_of = np.searchsorted(edges, times(table), side="right")
                order = np.argsort(bucket_of, kind="stable")
                ids, starts = np.unique(bucket_of[order], return_index=True)
                for bucket, begin, end in zip(ids, starts, [*starts[1:], len(order)], strict=True):
                    if bucket not in buckets:
                        buckets[bucket] = pq.ParquetWriter(os.path.join(work, f"{bucket}.parquet"), target)
                    buckets[bucket].write_table(table.take(pa.array(order[begin:end])))
            for bucket in sorted(buckets):
                buckets[bucket].close()
                part = pq.read_table(os.path.join(work, f"{bucket}.parquet"))
                writer.write(sorted_rows(part))
                del part
    finally:
        writer.close()


def _bucket_edges(stamps: Callable[[], Iterator[Any]], size: int, bins: int = 4096) -> Any:
    """Upper time bounds (exclusive) of buckets of at most ``size`` rows, from a histogram of the time
    column (``stamps()`` yields it chunk by chunk as int64 microseconds, nulls as int64 max: those fall
    after the last bound, in a bucket of their own). Two passes: the range, then the histogram."""
    import numpy as np

    null = np.iinfo(np.int64).max
    low, high = null, -null
    for chunk in stamps():
        present = chunk[chunk != null]
        if len(present):
            low, high = min(low, int(present.min())), max(high, int(present.max()))
    if low > high:  # no time at all
        return np.asarray([0], dtype=np.int64)
    bounds = np.linspace(low, high + 1, bins + 1).astype(np.int64)
    bounds[-1] = high + 1
    counts = np.zeros(bins, dtype=np.int64)
    for chunk in stamps():
        counts += np.histogram(chunk[chunk != null], bins=bounds)[0]
    edges, filled = [], 0
    for lower, count in zip(bounds[:-1], counts, strict=True):
        if filled and filled + count > size:
            edges.append(lower)
            filled = 0
        filled += count
    edges.append(high + 1)
    return np.asarray(edges, dtype=np.int64)
