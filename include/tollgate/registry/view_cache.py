"""Verification results of the registry view, reused while nothing that decides them has changed.

A page view used to download and check every listed version. Now each result is kept under a key made of
what decides it, read without downloading the model: the sha256 of the version's ``model.sig`` as stored,
the stored files' names and sizes, the version's tags and the trusted keys. A new signature, an added,
removed or resized file, a changed tag or another key setting is a new key, so it is verified again. An
edit that keeps every size is seen when the entry expires (``ttl_s``). The cache is bounded (oldest out
first) and lives in the api-server process; only this view uses it: every gate, promotion, rollback and
serving path verifies in full each time.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tollgate.registry import names


class VerificationCache:
    def __init__(self, max_entries: int = 256, ttl_s: float = 300.0) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[tuple, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_verify(self, key: tuple | None, verify: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The cached result for ``key`` when fresh, else ``verify()`` (stored; ``None`` keys never are)."""
        now = time.time()
        if key is not None:
            with self._lock:
                hit = self._entries.get(key)
                if hit is not None and now - hit[0] < self.ttl_s:
                    self._entries.move_to_end(key)
                    return dict(hit[1])
        result = {**verify(), "checked_at": now}
        if key is not None:
            with self._lock:
                self._entries[key] = (now, result)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return dict(result)

    def __len__(self) -> int:
        return len(self._entries)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _listing(location: str, tracking_uri: str, path: str = "") -> list[tuple[str, int | None]]:
    import mlflow

    found: list[tuple[str, int | None]] = []
    uri = f"{location}/{path}" if path else location
    for item in mlflow.artifacts.list_artifacts(artifact_uri=uri, tracking_uri=tracking_uri):
        rel = f"{path}/{item.path.rsplit('/', 1)[-1]}" if path else item.path.rsplit("/", 1)[-1]
        if item.is_dir:
            found += _listing(location, tracking_uri, rel)
        else:
            found.append((rel, item.file_size))
    return found


def verification_key(client: Any, version: Any, trusted_keys_setting: str) -> tuple | None:
    """What decides ``version``'s verification result; None when it cannot be read (then: verify)."""
    import mlflow

    from tollgate.registry.verify import logged_model_id_of

    model_id = logged_model_id_of(version)
    if not model_id:
        return None
    try:
        location = client.get_logged_model(model_id).artifact_location
        with tempfile.TemporaryDirectory(prefix="tollgate-sig-") as tmp:
            stored = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location}/{names.SIGNATURE_FILE}",
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
            )
            signature = Path(stored).read_bytes()
        listing = sorted(_listing(location, client.tracking_uri))
    except Exception:  # no signature, a storage hiccup: no key, the view verifies in full
        return None
    tags = json.dumps(sorted(dict(version.tags).items()))
    return (
        version.name,
        str(version.version),
        model_id,
        _sha256(signature),
        _sha256(json.dumps(listing).encode()),
        _sha256(tags.encode()),
        _sha256(trusted_keys_setting.encode()),
    )
