"""Score verified model versions on the fresh holdout of the challenger's dataset version."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollgate import extensions

if TYPE_CHECKING:
    import pandas as pd


def holdout_frame(
    repo: str, rev: str, path: str, holdout_fraction: float, example: extensions.Example | None = None
) -> pd.DataFrame:
    """The newest ``holdout_fraction`` of dataset version ``rev`` by event time (the trainer's split)."""
    from tollgate.training import dataset

    schema = (example or extensions.active()).dataset.schema
    frame, _ = dataset.load(None, repo, rev, path, schema=schema)
    _, holdout = dataset.time_split(frame, holdout_fraction, schema=schema)
    return holdout


def score_version(
    name: str,
    version: str,
    holdout: pd.DataFrame,
    trusted_keys: Any = None,
    tracking_uri: str | None = None,
    example: extensions.Example | None = None,
) -> dict[str, float]:
    """Verify the version's signature, load the verified files as a pyfunc and compute its metrics
    (the example's scorer: the task's metrics on the holdout's labels)."""
    import numpy as np

    from tollgate.registry.verify import load_verified_model

    example = example or extensions.active()
    with tempfile.TemporaryDirectory(prefix="tollgate-score-") as tmp:
        model, _ = load_verified_model(
            name, version, Path(tmp) / "model", trusted_keys, tracking_uri=tracking_uri
        )
        predictions = np.asarray(model.predict(holdout), dtype="float64")
    return example.score(holdout[example.dataset.schema.label].to_numpy(), predictions)
