"""Feature encoding fitted on the training split and saved with the model.

- Categorical ids (user, campaign, site): hashed into buckets (a fixed integer hash, the same in
  every process and every Python, unlike ``hash()``); the bucket count is sized from the training
  split's cardinality. Unseen ids simply land in some bucket.
- Small categoricals (device, country, hour, position): a vocabulary from the training split;
  index 0 is "unknown".
- Numerics: ``log1p`` for the heavy-tailed ones, then standardised with training mean/std.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from tollgate.data import schema

LOG_NUMERICS = ("bid_price", "page_depth")
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # 64-bit golden-ratio constant (Fibonacci hashing)
MIN_BUCKETS, MAX_BUCKETS = 64, 1 << 18


def hash_bucket(values: np.ndarray, buckets: int, salt: int) -> np.ndarray:
    """Stable hash of int64 ids into [0, buckets): splitmix64-style mixing of (id + salt)."""
    x = values.astype(np.int64).view(np.uint64) + np.uint64(salt)
    with np.errstate(over="ignore"):
        x = x * _HASH_MULTIPLIER
        x ^= x >> np.uint64(31)
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(29)
    return (x % np.uint64(buckets)).astype(np.int64)


def _buckets_for(cardinality: int) -> int:
    """Next power of two at or above twice the cardinality: few collisions, bounded size."""
    target = max(MIN_BUCKETS, 2 * cardinality)
    return min(MAX_BUCKETS, 1 << (target - 1).bit_length())


@dataclass(frozen=True)
class FeatureEncoder:
    id_buckets: dict[str, int]
    vocabularies: dict[str, list[str]]
    numeric_mean: dict[str, float]
    numeric_std: dict[str, float]

    @property
    def feature_columns(self) -> list[str]:
        return [*schema.CATEGORICAL_ID_COLUMNS, *schema.CATEGORICAL_COLUMNS, *schema.NUMERIC_COLUMNS]

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes, in the order of the columns returned by :meth:`transform`."""
        ids = [self.id_buckets[c] for c in schema.CATEGORICAL_ID_COLUMNS]
        cats = [len(self.vocabularies[c]) + 1 for c in schema.CATEGORICAL_COLUMNS]
        return ids + cats

    @classmethod
    def fit(cls, train: pd.DataFrame) -> FeatureEncoder:
        id_buckets = {c: _buckets_for(int(train[c].nunique())) for c in schema.CATEGORICAL_ID_COLUMNS}
        vocabularies = {
            c: sorted(str(v) for v in pd.unique(train[c].dropna())) for c in schema.CATEGORICAL_COLUMNS
        }
        mean, std = {}, {}
        for c in schema.NUMERIC_COLUMNS:
            values = _numeric_raw(train, c)
            mean[c] = float(np.nanmean(values))
            spread = float(np.nanstd(values))
            std[c] = spread if spread > 1e-12 else 1.0
        return cls(id_buckets, vocabularies, mean, std)

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(categorical indices int64 [n, n_cat], numerics float32 [n, n_num])."""
        missing = [c for c in self.feature_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks feature columns {missing}")
        columns = []
        for salt, c in enumerate(schema.CATEGORICAL_ID_COLUMNS, start=1):
            ids = pd.to_numeric(frame[c], errors="coerce").fillna(-1).to_numpy(dtype=np.int64)
            columns.append(hash_bucket(ids, self.id_buckets[c], salt * 1_000_003))
        for c in schema.CATEGORICAL_COLUMNS:
            as_text = frame[c].astype("string").fillna("").to_numpy(dtype=object)
            codes = pd.Categorical(as_text, categories=self.vocabularies[c]).codes  # -1 = unseen
            columns.append(codes.astype(np.int64) + 1)
        categorical = np.stack(columns, axis=1) if len(frame) else np.zeros((0, len(columns)), np.int64)
        numerics = []
        for c in schema.NUMERIC_COLUMNS:
            values = (_numeric_raw(frame, c) - self.numeric_mean[c]) / self.numeric_std[c]
            numerics.append(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0))
        numeric = np.stack(numerics, axis=1).astype(np.float32)
        return categorical, numeric

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureEncoder:
        return cls(
            id_buckets={k: int(v) for k, v in data["id_buckets"].items()},
            vocabularies={k: list(v) for k, v in data["vocabularies"].items()},
            numeric_mean={k: float(v) for k, v in data["numeric_mean"].items()},
            numeric_std={k: float(v) for k, v in data["numeric_std"].items()},
        )


def _numeric_raw(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if column in LOG_NUMERICS:
        values = np.log1p(np.clip(values, 0.0, None))
    return values
