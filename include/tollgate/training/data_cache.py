"""A node-local cache of DVC-versioned datasets, keyed by DVC's own content hash.

Every attempt of a training run reads the same dataset version. Through DVC that costs the ``dvc`` import
(a second or more of CPU) and a git + remote round trip, at each retry, on the path from a spot notice to
training again. A local data repository already names the content of ``<path>`` at ``rev`` in its
``<path>.dvc`` file (``md5`` of the bytes): ``git show`` reads that in milliseconds, and a file in the cache
folder named by it is the dataset, verified again on every read (a damaged or foreign file is never used:
it is read from DVC and written anew).

The cache folder is ``--data-cache`` / ``TOLLGATE_DATA_CACHE``; the local platform gives its trainers
``$TOLLGATE_HOME/cache/datasets``. In a pod it would be a node-local volume (``hostPath`` or a local PV),
so that the next spot pod on the same node skips the download. A data repository that is not a local git
checkout (a URL) is read through DVC every time.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

_MD5 = re.compile(r"^\s*-?\s*md5:\s*([0-9a-f]{32})\s*$", re.MULTILINE)


def dvc_content_md5(repo: str, rev: str, path: str) -> str | None:
    """The md5 that ``<path>.dvc`` at ``rev`` of the local git repository ``repo`` records, or None
    (not a local repository, no such rev or file, or an output that is not a single file)."""
    if not Path(repo, ".git").exists():
        return None
    shown = subprocess.run(
        ["git", "-C", repo, "show", f"{rev}:{path}.dvc"], capture_output=True, text=True, check=False
    )
    if shown.returncode != 0:
        return None
    found = _MD5.findall(shown.stdout)
    return found[0] if len(found) == 1 else None


def read_through(
    cache_dir: str | None, repo: str, rev: str, path: str, read: Callable[[str, str, str], bytes]
) -> tuple[bytes, str]:
    """The bytes of ``path`` at ``rev``: from the cache when it holds them (verified), else from ``read``
    (DVC), then stored for the next attempt. Returns (bytes, how: "cache" | "dvc" | "dvc, cached")."""
    md5 = dvc_content_md5(repo, rev, path) if cache_dir else None
    if md5 is None:
        return read(repo, rev, path), "dvc"
    assert cache_dir is not None
    file = Path(cache_dir) / f"{md5}.parquet"
    try:
        payload = file.read_bytes()
    except OSError:
        payload = None
    if payload is not None and hashlib.md5(payload).hexdigest() == md5:
        return payload, "cache"
    payload = read(repo, rev, path)
    if hashlib.md5(payload).hexdigest() != md5:
        return payload, "dvc"  # DVC hashed other bytes (e.g. a text normalisation): cannot be keyed safely
    try:
        _write_atomically(file, payload)
    except OSError:
        return payload, "dvc"  # a full or read-only cache never stops training
    return payload, "dvc, cached"


def _write_atomically(file: Path, payload: bytes) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, file)  # readers see the old file or the whole new one, never a part
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
