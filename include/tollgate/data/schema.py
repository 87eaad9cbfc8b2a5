"""The ad-impression event schema: the contract between the landing area, the validation suite,
the curated dataset and the trainer. No heavy imports: the trainer and DAG files read it too."""

from __future__ import annotations

from tollgate.extensions import DatasetSchema

EVENT_ID = "event_id"
TIMESTAMP = "event_ts"
LABEL = "clicked"

# column -> pandas dtype of the curated dataset
COLUMNS: dict[str, str] = {
    "event_id": "string",  # unique per event
    "event_ts": "datetime64[us, UTC]",  # inside the partition's day
    "user_id": "int64",
    "campaign_id": "int64",
    "site_id": "int64",
    "device": "string",  # one of DEVICES
    "country": "string",  # one of COUNTRIES
    "hour_of_day": "int64",  # 0..23, derived from event_ts
    "ad_position": "int64",  # 1..5, slot on the page
    "bid_price": "float64",  # CPM bid in USD, 0.01..50
    "user_ctr_7d": "float64",  # user's recent click-through rate, 0..1
    "page_depth": "int64",  # pages viewed in session, 1..50
    "clicked": "int64",  # label, 0 or 1
}

CATEGORICAL_ID_COLUMNS = ("user_id", "campaign_id", "site_id")
CATEGORICAL_COLUMNS = ("device", "country", "hour_of_day", "ad_position")
NUMERIC_COLUMNS = ("bid_price", "user_ctr_7d", "page_depth")

DEVICES = ("mobile", "desktop", "tablet")
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA")

# Path of the curated training set inside the data repository (tracked by DVC).
CURATED_PATH = "data/ctr_curated.parquet"

# Inclusive value ranges of the numeric columns: the generator draws inside them, the GX suite
# quarantines rows outside them.
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "user_id": (1, 10_000_000),
    "campaign_id": (1, 100_000),
    "site_id": (1, 1_000_000),
    "hour_of_day": (0, 23),
    "ad_position": (1, 5),
    "bid_price": (0.01, 50.0),
    "user_ctr_7d": (0.0, 1.0),
    "page_depth": (1, 50),
}
LABEL_VALUES = (0, 1)

# Landing-area layout: <landing>/dt=YYYY-MM-DD/impressions.parquet
LANDING_FILE = "impressions.parquet"

# The same contract as the typed extension point (tollgate.extensions.DatasetSchema) the core reads.
SCHEMA = DatasetSchema(
    name="ad impressions",
    columns=COLUMNS,
    label=LABEL,
    timestamp=TIMESTAMP,
    row_id=EVENT_ID,
    label_values=LABEL_VALUES,
    landing_file=LANDING_FILE,
    curated_path=CURATED_PATH,
)
