"""Score verified model versions on the fresh holdout of the challenger's dataset version."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def holdout_frame(repo: str, rev: str, path: str, holdout_fraction: float) -> pd.DataFrame:
    """The newest ``holdout_fraction`` of dataset version ``rev`` by event time (the trainer's split)."""
    from tollgate.training import dataset

    frame, _ = dataset.load(None, repo, rev, path)
    _, holdout = dataset.time_split(frame, holdout_fraction)
    return holdout


def score_version(
    name: str, version: str, holdout: pd.DataFrame, trusted_keys: Any = None, tracking_uri: str | None = None
) -> dict[str, float]:
    """Verify the version's signature, load the verified files as a pyfunc and compute its metrics."""
    import numpy as np

    from tollgate.data.schema import LABEL
    from tollgate.registry.verify import load_verified_model
    from tollgate.training.metrics import evaluate

    with tempfile.TemporaryDirectory(prefix="tollgate-score-") as tmp:
        model, _ = load_verified_model(
            name, version, Path(tmp) / "model", trusted_keys, tracking_uri=tracking_uri
        )
        probabilities = np.asarray(model.predict(holdout), dtype="float64")
    return evaluate(holdout[LABEL].to_numpy(), probabilities)
