"""The one object-storage layer of every stage: data, training, launch, registry.

A location is a URI: a local folder (``/path`` or ``file:///path``) in the embedded default, or
``s3://bucket/prefix`` in production. Everything goes through fsspec, so the same code writes to
both. For S3 the endpoint comes from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (MinIO, moto,
LocalStack) and credentials from the usual AWS chain (env, profile, IRSA / instance role).

Two ways in, one set of rules:
- URI functions (``put_new``, ``read_bytes``, ...) for the data stage, whose objects are immutable:
  ``put_new`` refuses to overwrite a different object, so a rerun that produces identical bytes is a
  no-op and anything else is a loud error.
- ``Folder``: a folder of named blobs that may be replaced (checkpoints, manifests, ledgers, model
  output). Each write is all-or-nothing: locally a temp file in the same folder then ``os.replace``;
  on S3 one PUT, visible only once complete. Callers that need a group of blobs to be consistent
  (checkpoint + manifest) write the listing blob last and trust only what it lists.

No Airflow import: the trainer imports this inside its container.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tollgate_torch import folder as _blobs

if TYPE_CHECKING:
    import fsspec

TEMP_MARK = _blobs.TEMP_MARK
LOCK_NAME = _blobs.LOCK_NAME


class StorageError(RuntimeError):
    """A storage location cannot be used as asked (missing object, refused overwrite, bad URI)."""


class UnsupportedLocation(StorageError, ValueError):
    """A folder URI with a scheme other than a local path or ``s3://``."""


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def s3_endpoint_url() -> str | None:
    """The S3 endpoint override (moto, MinIO); None means AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem serving ``uri`` and the path inside it."""
    import fsspec

    if uri.startswith("s3://"):
        options: dict = {}
        endpoint = s3_endpoint_url()
        if endpoint:
            options["endpoint_url"] = endpoint
        # Listings must see objects another process wrote a moment ago: no listings cache. The client
        # itself is reused (fsspec's instance cache, keyed by these options; safe across fork).
        fs = fsspec.filesystem("s3", use_listings_cache=False, **options)
        return fs, uri[len("s3://") :].rstrip("/")
    if is_remote(uri):
        fs, path = fsspec.core.url_to_fs(uri)
        return fs, path
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(path))


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a location URI (keeps the ``s3://`` scheme)."""
    if is_remote(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return os.path.join(uri, *parts)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_write_local_atomic = _blobs.write_local_atomic  # one implementation, in the helper package


# ---- immutable objects by URI (data stage) --------------------------------------------------------
def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    if not fs.exists(path):
        raise StorageError(f"No object at {uri}.")
    return fs.cat_file(path)


def list_dir(uri: str) -> list[str]:
    """Names (not paths) of the entries directly under ``uri``; empty when it does not exist."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def _new_object(uri: str, identical: Callable[[], bool]) -> tuple[Any, str, str] | None:
    """(filesystem, path, parent folder) to write a new object at ``uri``, the folder made; None when
    ``identical()`` says the same bytes are already stored there; StorageError when other bytes are."""
    fs, path = filesystem(uri)
    if fs.exists(path):
        if identical():
            return None
        raise StorageError(
            f"Refusing to overwrite {uri}: an object with different content is already stored there. "
            "Stored data is immutable; write under a new key instead."
        )
    parent = posixpath.dirname(path) if is_remote(uri) else os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    return fs, path, parent


def put_new(uri: str, data: bytes) -> bool:
    """Write ``data`` at ``uri`` unless it is already there.

    Returns True when written, False when identical bytes were already stored; raises
    StorageError instead of replacing different bytes (nothing is ever overwritten).
    """
    target = _new_object(uri, lambda: sha256_of(uri) == sha256(data))
    if target is None:
        return False
    fs, path, _ = target
    if is_remote(uri):
        fs.pipe_file(path, data)
    else:
        _write_local_atomic(path, data, durable=False)
    return True


def sha256_of(uri: str, block: int = 8 << 20) -> str:
    """The sha256 of the object at ``uri``, read in blocks (a large partition never sits in memory)."""
    fs, path = filesystem(uri)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def put_file_new(uri: str, local_path: str) -> bool:
    """``put_new`` for a local file, copied in blocks: written unless identical bytes are already there."""
    import shutil
    import tempfile

    target = _new_object(uri, lambda: sha256_of(uri) == sha256_of(local_path))
    if target is None:
        return False
    fs, path, parent = target
    if is_remote(uri):
        fs.put_file(local_path, path)
        return True
    handle, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TEMP_MARK, dir=parent)
    os.close(handle)
    try:
        shutil.copyfile(local_path, temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return True


def copy_new(source_uri: str, uri: str) -> bool:
    """``put_new`` of the object at ``source_uri`` (either side local or remote), in blocks."""
    import tempfile

    if not is_remote(source_uri):
        return put_file_new(uri, filesystem(source_uri)[1])
    fs, path = filesystem(source_uri)
    with tempfile.TemporaryDirectory(prefix="tollgate-copy-") as tmp:
        local = os.path.join(tmp, "object")
        fs.get_file(path, local)
        return put_file_new(uri, local)


def put_if_absent(uri: str, data: bytes) -> bool:
    """Write ``data`` unless something is already stored at ``uri`` (the first write wins).

    For evidence whose bytes differ between attempts only by timestamps (reports, Data Docs): a
    retry after a crash keeps what the earlier attempt wrote.
    """
    if exists(uri):
        return False
    return put_new(uri, data)


def put_tree(local_dir: str, uri: str) -> int:
    """Copy a local folder (e.g. GX Data Docs) under ``uri``, keeping files already there."""
    written = 0
    for root, _dirs, files in os.walk(local_dir):
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, local_dir).replace(os.sep, "/")
            with open(full, "rb") as handle:
                written += put_if_absent(join(uri, *rel.split("/")), handle.read())
    return written


# ---- a folder of replaceable blobs (training, launch, registry) -----------------------------------
class Folder(_blobs.Folder):
    """Named blobs directly under one location (a local folder or ``s3://bucket/prefix``).

    The implementation lives in the tollgate-torch helper package (the training image has only torch and
    fsspec); here an unsupported URI is this module's :class:`UnsupportedLocation`."""

    def __init__(self, uri: str) -> None:
        try:
            super().__init__(uri)
        except _blobs.UnsupportedLocation as error:
            raise UnsupportedLocation(str(error)) from None
