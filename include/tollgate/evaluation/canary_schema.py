"""Column names of the prediction log and the labels table the canary analysis reads: one home.

The router's prediction log is adapted to these names (rename once, at load); every analysis
function reads only the names below. Outputs are a float (probability of the positive class, or a
regression value) or a sequence of class probabilities (multiclass), as the pyfunc returns them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

REQUEST_ID = "request_id"
TIMESTAMP = "ts"
ROLLOUT_ID = "rollout_id"
ARM = "arm"  # CHAMPION or CHALLENGER: who answered the request
SERVED_VERSION = "served_version"
SHADOW_VERSION = "shadow_version"  # null when the request was not mirrored
SERVED_OUTPUT = "served_output"
SHADOW_OUTPUT = "shadow_output"
LATENCY_MS = "latency_ms"
SHADOW_LATENCY_MS = "shadow_latency_ms"
STATUS = "status"  # STATUS_OK or anything else (an error)
LABEL = "label"  # from the labels table, joined by request id

CHAMPION = "champion"
CHALLENGER = "challenger"
STATUS_OK = "ok"

LOG_COLUMNS = (
    REQUEST_ID,
    TIMESTAMP,
    ROLLOUT_ID,
    ARM,
    SERVED_VERSION,
    SHADOW_VERSION,
    SERVED_OUTPUT,
    SHADOW_OUTPUT,
    LATENCY_MS,
    SHADOW_LATENCY_MS,
    STATUS,
)


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    """Raise a clear error naming the missing columns and where the names are defined."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} lacks columns {missing}; rename the router's log to the names in "
            "tollgate.evaluation.canary_schema before the analysis"
        )


def join_labels(log: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The log with a LABEL column (null where the label has not matured), one row per request."""
    require_columns(log, LOG_COLUMNS, "prediction log")
    require_columns(labels, (REQUEST_ID, LABEL), "labels table")
    if labels[REQUEST_ID].duplicated().any():
        raise ValueError("labels table has duplicate request ids; keep one label per request")
    return log.merge(labels[[REQUEST_ID, LABEL]], on=REQUEST_ID, how="left", validate="m:1")
