"""A folder of named blobs, local or on S3, with writes that are all-or-nothing.

Local: write a temp file in the same folder, fsync, ``os.replace`` (atomic on POSIX), fsync the folder.
S3: one PUT per object (via fsspec/s3fs); an S3 object becomes visible only once its upload has
completed, so a reader never sees half an object. Callers that need a group of objects to be
consistent (checkpoint + manifest) write the manifest last and trust only what it lists.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Protocol


class Storage(Protocol):
    uri: str

    def write(self, name: str, data: bytes, durable: bool = True) -> None: ...
    def read(self, name: str) -> bytes: ...
    def exists(self, name: str) -> bool: ...
    def delete(self, name: str) -> None: ...
    def list(self) -> list[str]: ...


class LocalStorage:
    TEMP_MARK = ".tmp-"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = str(self.root)

    def write(self, name: str, data: bytes, durable: bool = True) -> None:
        """Atomic replace; ``durable`` also fsyncs (survives a host crash, not just a process kill)."""
        final = self.root / name
        temp = self.root / f".{name}{self.TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)
        if not durable:
            return
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def list(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_file() and self.TEMP_MARK not in p.name)

    def remove_stale_temps(self) -> list[str]:
        """Temp files left by an attempt killed mid-write (never part of a valid checkpoint)."""
        stale = [p for p in self.root.iterdir() if self.TEMP_MARK in p.name]
        for path in stale:
            path.unlink(missing_ok=True)
        return [p.name for p in stale]


class S3Storage:
    def __init__(self, uri: str) -> None:
        import fsspec

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        options = {"endpoint_url": endpoint} if endpoint else {}
        self.fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
        self.uri = uri.rstrip("/")
        self.prefix = self.uri.removeprefix("s3://")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def write(self, name: str, data: bytes, durable: bool = True) -> None:
        self.fs.pipe_file(self._key(name), data)

    def read(self, name: str) -> bytes:
        return self.fs.cat_file(self._key(name))

    def exists(self, name: str) -> bool:
        return self.fs.exists(self._key(name))

    def delete(self, name: str) -> None:
        if self.fs.exists(self._key(name)):
            self.fs.rm_file(self._key(name))

    def list(self) -> list[str]:
        try:
            entries = self.fs.ls(self.prefix, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(e.rsplit("/", 1)[-1] for e in entries)

    def remove_stale_temps(self) -> list[str]:
        return []


def open_storage(uri: str) -> LocalStorage | S3Storage:
    if uri.startswith("s3://"):
        return S3Storage(uri)
    if "://" in uri and not uri.startswith("file://"):
        from tollgate.training.errors import BadInput

        raise BadInput(f"unsupported storage URI {uri!r}: use a local folder or s3://bucket/prefix")
    return LocalStorage(uri.removeprefix("file://"))
