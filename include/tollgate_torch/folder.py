"""A folder of replaceable named blobs, local or ``s3://``, each write all-or-nothing.

Locally a temp file in the same folder, fsynced, then ``os.replace``; on S3 one PUT, visible only once
complete. The S3 endpoint comes from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (MinIO, moto) and
credentials from the usual AWS chain. This is the one implementation: Tollgate's storage layer
(``tollgate.storage.Folder``) is this class, so a training image needs nothing but torch and fsspec.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

TEMP_MARK = ".tmp-"
LOCK_NAME = ".writer.lock"


class UnsupportedLocation(ValueError):
    """A folder URI with a scheme other than a local path or ``s3://``."""


def write_local_atomic(
    path: str, data: bytes, durable: bool = True, midway: Callable[[], None] | None = None
) -> None:
    """Temp file in the same folder, then ``os.replace``: a reader never sees half a file.

    ``durable`` also fsyncs the file and its folder (survives a host crash, not just a process kill).
    ``midway`` (a test point) is called when half of the data is in the temp file.
    """
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(temp, "wb") as handle:
            if midway is not None:
                half = len(data) // 2
                handle.write(data[:half])
                handle.flush()
                midway()
                handle.write(data[half:])
            else:
                handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    if durable:
        directory = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


class Folder:
    """Named blobs directly under one location (a local folder or ``s3://bucket/prefix``)."""

    def __init__(self, uri: str) -> None:
        import fsspec

        if _is_remote(uri) and not uri.startswith("s3://"):
            raise UnsupportedLocation(
                f"unsupported storage URI {uri!r}: use a local folder or s3://bucket/prefix"
            )
        self.remote = _is_remote(uri)
        if self.remote:
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            options = {"endpoint_url": endpoint} if endpoint else {}
            # No listings cache: a blob another process (a newer attempt) wrote a moment ago must be seen.
            self.fs = fsspec.filesystem("s3", use_listings_cache=False, **options)
            self.path = uri.removeprefix("s3://").rstrip("/")
            self.uri = uri.rstrip("/")
            self.local_root: Path | None = None
        else:
            self.fs = fsspec.filesystem("file")
            self.path = str(Path(uri.removeprefix("file://")).resolve())
            self.local_root = Path(self.path)
            self.local_root.mkdir(parents=True, exist_ok=True)
            self.uri = self.path

    def _key(self, name: str) -> str:
        return f"{self.path}/{name}"

    def write(
        self, name: str, data: bytes, durable: bool = True, midway: Callable[[], None] | None = None
    ) -> None:
        """All-or-nothing replace of ``name``; ``durable`` adds fsyncs on local disks.

        ``midway``: test point called with half of a local write done (an S3 PUT has no middle).
        """
        if self.remote:
            self.fs.pipe_file(self._key(name), data)
            return
        write_local_atomic(self._key(name), data, durable, midway)

    def read(self, name: str) -> bytes:
        return self.fs.cat_file(self._key(name))

    def exists(self, name: str) -> bool:
        return self.fs.isfile(self._key(name))

    def delete(self, name: str) -> None:
        if self.fs.exists(self._key(name)):
            self.fs.rm_file(self._key(name))

    def list(self) -> list[str]:
        """Blob names, without partial writes; empty when the folder does not exist."""
        try:
            entries = self.fs.ls(self.path, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        names = (e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "file")
        return sorted(n for n in names if TEMP_MARK not in n and n != LOCK_NAME)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's writer lock: a check and the write it guards happen as one step.

        Local folders only (``flock`` on a lock file, released when the holder dies). S3 has no lock: there
        the check and the write are two requests, and callers document that window.
        """
        if self.local_root is None:
            yield
            return
        fd = os.open(self.local_root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def remove_stale_temps(self) -> list[str]:
        """Temp files left by an attempt killed mid-write (never part of a valid checkpoint)."""
        if self.local_root is None:
            return []  # an S3 PUT leaves nothing behind when it is cut short
        stale = [p for p in self.local_root.iterdir() if TEMP_MARK in p.name]
        for path in stale:
            path.unlink(missing_ok=True)
        return [p.name for p in stale]
