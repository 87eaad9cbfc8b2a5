"""Feature encoding: stable hashing, vocabularies with an unknown slot, standardised numerics."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tollgate.data import schema
from tollgate.training.features import FeatureEncoder, hash_bucket
from tollgate.training.synthetic import make_events

pytestmark = pytest.mark.unit


def test_hash_is_stable_across_processes() -> None:
    ids = np.array([0, 1, 42, 10**12, -5], dtype=np.int64)
    here = hash_bucket(ids, 1024, 7).tolist()
    code = (
        "import numpy as np; from tollgate.training.features import hash_bucket;"
        "print(hash_bucket(np.array([0, 1, 42, 10**12, -5], dtype=np.int64), 1024, 7).tolist())"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert str(here) == there.strip()
    assert all(0 <= b < 1024 for b in here) and len(set(here)) == 5


def test_fit_transform_roundtrip_and_unknowns() -> None:
    train = make_events(2000, seed=1)
    enc = FeatureEncoder.fit(train)
    assert enc.vocabularies["device"] == sorted(schema.DEVICES)
    assert all(b & (b - 1) == 0 and b >= 2 * train[c].nunique() for c, b in enc.id_buckets.items())
    cat, num = enc.transform(train)
    assert cat.shape == (2000, 7) and num.shape == (2000, 3) and num.dtype == np.float32
    assert np.allclose(num.mean(axis=0), 0, atol=1e-5) and np.allclose(num.std(axis=0), 1, atol=1e-3)
    assert (cat[:, 3:] > 0).all()  # every training category is known

    again = FeatureEncoder.from_dict(enc.to_dict())
    other = make_events(50, seed=2)
    other.loc[0, "device"] = "smart-fridge"  # never seen: index 0
    other.loc[1, "bid_price"] = np.nan  # missing numeric: the training mean (0 after scaling)
    cat2, num2 = again.transform(other)
    assert cat2[0, 3] == 0 and num2[1, 0] == 0.0
    assert np.array_equal(cat2[2:], enc.transform(other.iloc[2:])[0])
