"""The registry view's verification cache: a result is reused under the same key, recomputed under a new
one (changed signature digest, files, tags or keys), and the cache stays bounded."""

from __future__ import annotations

import pytest

from tollgate.registry.view_cache import VerificationCache

pytestmark = pytest.mark.unit


def test_same_key_reuses_a_new_key_verifies_and_the_oldest_entries_go():
    cache = VerificationCache(max_entries=2, ttl_s=60)
    runs: list[str] = []

    def verify(label: str):
        return lambda: runs.append(label) or {"ok": label != "tampered"}

    first = cache.get_or_verify(("m", "1", "sig-a"), verify("first"))
    again = cache.get_or_verify(("m", "1", "sig-a"), verify("second view"))
    assert runs == ["first"] and again == first  # the second page view did not verify again
    changed = cache.get_or_verify(("m", "1", "sig-b"), verify("tampered"))
    assert runs == ["first", "tampered"] and changed["ok"] is False
    cache.get_or_verify(("m", "2", "sig-c"), verify("v2"))
    assert len(cache) == 2  # bounded: ("m", "1", "sig-a") went first
    cache.get_or_verify(("m", "1", "sig-a"), verify("again"))
    assert runs[-1] == "again"
    cache.get_or_verify(None, verify("no key"))
    cache.get_or_verify(None, verify("no key"))
    assert runs[-2:] == ["no key", "no key"]  # without a key nothing is reused


def test_an_expired_result_is_verified_again():
    cache = VerificationCache(ttl_s=0)
    runs: list[int] = []
    for _ in range(2):
        cache.get_or_verify(("m", "1", "sig"), lambda: runs.append(1) or {"ok": True})
    assert len(runs) == 2
