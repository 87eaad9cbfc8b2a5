"""The digits dataset: 8x8 grey-scale scans of handwritten digits, landed one day at a time.

The upstream is simulated from the images scikit-learn ships inside its package
(``sklearn.datasets.load_digits``: 1,797 scans, 16 grey levels; nothing is downloaded). Each day's
partition draws scans deterministically per (day, seed), shifts each by at most one pixel and stamps it
with a capture time inside the day, so no two days hold the same rows.

Suite (its own, see ``expectations``): row-level checks quarantine a bad scan (missing pixels, a pixel
outside 0..16, an unknown digit, a duplicate id, a capture time outside the day); batch-level checks
reject the partition (columns and types, row count, every digit 0..9 present).
"""

from __future__ import annotations

import functools
import zlib
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tollgate.data.suite import BATCH, ROW, Spec
from tollgate.extensions import DatasetSchema

if TYPE_CHECKING:
    import pandas as pd

    from tollgate.data.suite import GateThresholds

from tollgate_examples.digits.layout import CLASSES, MAX_GREY, PIXELS, SIDE

SCHEMA = DatasetSchema(
    name="digit scans",
    columns={
        "scan_id": "string",
        "scanned_at": "datetime64[us, UTC]",
        **dict.fromkeys(PIXELS, "int64"),
        "digit": "int64",
    },
    label="digit",
    timestamp="scanned_at",
    row_id="scan_id",
    label_values=CLASSES,
    landing_file="scans.parquet",
    curated_path="data/digits_curated.parquet",
)

GX_TYPES = {"string": "str", "int64": "int64", "datetime64[us, UTC]": "Timestamp"}

FAULTS: dict[str, str] = {
    "sensor_dropout": "a burst of scans with missing pixel values (row-level)",
    "eight_bit_scans": "scans from an 8-bit scanner: grey levels up to 255 (row-level)",
    "unknown_digit": "scans labelled 10 or -1 (row-level)",
    "missing_digit": "no scan of the digit 7 in the whole day (batch-level)",
    "dropped_column": "the last pixel column is missing (batch-level)",
}


@functools.cache
def _bundled_digits() -> tuple[Any, Any]:
    """scikit-learn's bundled scans (images, labels), read once per process: it ships them, no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def _rng(*keys: int):
    import numpy as np

    return np.random.default_rng([abs(int(k)) for k in keys])


def generate(day: date, rows: int, seed: int, fault: str | None = None, share: float = 0.02) -> pd.DataFrame:
    """One day of scans (``rows`` of them), with ``fault`` injected when given."""
    import numpy as np
    import pandas as pd

    all_images, all_labels = _bundled_digits()
    rng = _rng(seed, day.toordinal())
    pick = rng.integers(0, len(all_labels), rows)
    images = all_images[pick].astype(np.int64)  # (rows, 8, 8), 0..16
    shifts = rng.integers(-1, 2, (rows, 2))
    for i, (dy, dx) in enumerate(shifts):  # at most one pixel; what leaves the frame is dropped
        images[i] = np.roll(images[i], (int(dy), int(dx)), axis=(0, 1))
        if dy:
            images[i][0 if dy > 0 else -1, :] = 0
        if dx:
            images[i][:, 0 if dx > 0 else -1] = 0
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    seconds = np.sort(rng.integers(0, 86_400, rows))
    frame = pd.DataFrame(images.reshape(rows, SIDE * SIDE), columns=list(PIXELS))
    frame.insert(0, "scanned_at", [start + timedelta(seconds=int(s)) for s in seconds])
    frame.insert(0, "scan_id", [f"{day.isoformat()}-{seed}-{i:06d}" for i in range(rows)])
    frame["digit"] = all_labels[pick].astype(np.int64)
    frame = frame.astype(dict(SCHEMA.columns))
    return inject(frame, fault, day, seed, share) if fault else frame


def inject(frame: pd.DataFrame, fault: str, day: date, seed: int, share: float) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    if fault not in FAULTS:
        raise ValueError(f"Unknown digits fault {fault!r}; choose one of: {', '.join(FAULTS)}.")
    rng = _rng(seed, day.toordinal(), zlib.crc32(fault.encode()))
    df = frame.copy()
    n = len(df)
    k = max(1, round(n * share)) if n else 0
    rows = df.index[np.sort(rng.choice(n, k, replace=False))] if n else df.index[:0]
    if fault == "sensor_dropout":
        for column in PIXELS[:8]:
            df[column] = df[column].astype("Int64")
            df.loc[rows, column] = pd.NA
    elif fault == "eight_bit_scans":
        df.loc[rows, list(PIXELS)] = df.loc[rows, list(PIXELS)] * 16 - 1
        df[list(PIXELS)] = df[list(PIXELS)].clip(lower=0)
    elif fault == "unknown_digit":
        df.loc[rows, "digit"] = rng.choice([10, -1], len(rows))
    elif fault == "missing_digit":
        df = df[df["digit"] != 7].reset_index(drop=True)
    elif fault == "dropped_column":
        df = df.drop(columns=[PIXELS[-1]])
    return df


def expectations(day: date, thresholds: GateThresholds) -> list[Spec]:
    """The digits suite of ``day``: row-level scan checks, batch-level schema, size and class coverage.

    Of the configured batch bounds it uses the row counts and the quarantine share (in the core); the
    click-rate bounds do not apply to a ten-class label.
    """
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1) - timedelta(microseconds=1)
    found = [
        Spec(
            "ExpectTableColumnsToMatchSet", {"column_set": list(SCHEMA.columns), "exact_match": True}, BATCH
        ),
        Spec(
            "ExpectTableRowCountToBeBetween",
            {"min_value": thresholds.min_rows, "max_value": thresholds.max_rows},
            BATCH,
        ),
        Spec(
            "ExpectColumnDistinctValuesToContainSet", {"column": "digit", "value_set": list(CLASSES)}, BATCH
        ),
    ]
    found += [
        Spec("ExpectColumnValuesToBeOfType", {"column": c, "type_": GX_TYPES[t]}, BATCH)
        for c, t in SCHEMA.columns.items()
        if c not in PIXELS  # pixels: a wrong type shows as values outside 0..16 (row-level)
    ]
    found += [Spec("ExpectColumnValuesToNotBeNull", {"column": c}, ROW) for c in SCHEMA.columns]
    found += [
        Spec("ExpectColumnValuesToBeBetween", {"column": c, "min_value": 0, "max_value": MAX_GREY}, ROW)
        for c in PIXELS
    ]
    found += [
        Spec("ExpectColumnValuesToBeInSet", {"column": "digit", "value_set": list(CLASSES)}, ROW),
        Spec("ExpectColumnValuesToBeUnique", {"column": "scan_id"}, ROW),
        Spec(
            "ExpectColumnValuesToBeBetween",
            {"column": "scanned_at", "min_value": start.isoformat(), "max_value": end.isoformat()},
            ROW,
        ),
    ]
    return found


class DigitScans:
    """The digits example's Dataset extension point."""

    schema = SCHEMA
    faults = FAULTS
    suite_name = "digit_scans"
    demo_fault = "eight_bit_scans"  # what `make demo EXAMPLE=digits` injects into its middle day
    demo_rows = 2000  # scans per demo day: the CNN trains on a few thousand in seconds

    def expectations(self, day: date, thresholds: GateThresholds) -> list[Spec]:
        return expectations(day, thresholds)

    def generate(
        self, day: date, rows: int, seed: int, fault: str | None = None, share: float = 0.02
    ) -> pd.DataFrame:
        return generate(day, rows, seed, fault, share)
