"""Click-through example: ad impressions -> a small embedding MLP -> click probability (binary).

Its parts still live in the library where the project grew them (``tollgate.data.schema`` /
``suite`` / ``generator``, ``tollgate.training``, ``tollgate.registry.pyfunc_model``); this module
only binds them to the four extension points, as a user's own example would bind theirs.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from tollgate.data import schema
from tollgate.extensions import Example, GateMetrics, ModelPackaging, TaskType, TrainerContract

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from tollgate.data.suite import GateThresholds, Spec
    from tollgate.extensions import Predictor

INCLUDE = Path(__file__).resolve().parents[2]


class AdImpressions:
    """The CTR dataset: schema, GX suite and the simulated ad server (with its faults)."""

    schema = schema.SCHEMA

    @property
    def faults(self) -> dict[str, str]:
        from tollgate.data.generator import FAULTS

        return FAULTS

    def expectations(self, day: date, thresholds: GateThresholds) -> list[Spec]:
        from tollgate.data.suite import specs

        return specs(day, thresholds)

    def generate(
        self, day: date, rows: int, seed: int, fault: str | None = None, share: float = 0.02
    ) -> pd.DataFrame:
        from tollgate.data.generator import generate, inject

        frame = generate(day, rows=rows, seed=seed)
        return inject(frame, fault, day, seed=seed, share=share) if fault else frame

    def traffic_after(self, last_day: date, rows: int, seed: int) -> pd.DataFrame:
        """Optional hook: traffic newer than a dataset whose newest day is ``last_day`` (the local replay of
        shadow and canary stages sends it beside the holdout). Bids have drifted: see ``BID_DRIFT``."""
        from tollgate.data.generator import traffic_after

        return traffic_after(last_day, rows=rows, seed=seed)


def _load_predictor(folder: str | Path) -> Predictor:
    from tollgate.training.predict import load_predictor

    return load_predictor(folder)


def _input_example(predictor: Predictor) -> pd.DataFrame:
    from tollgate.registry.logged_model import input_example

    return input_example(list(predictor.feature_columns))


def _score(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    from tollgate.training.metrics import evaluate

    return evaluate(labels, predictions)


EXAMPLE = Example(
    name="ctr",
    dataset=AdImpressions(),
    trainer=TrainerContract(command=("python", "-m", "tollgate.training"), experiment="tollgate-ctr"),
    packaging=ModelPackaging(
        model_code=INCLUDE / "tollgate" / "registry" / "pyfunc_model.py",
        code_paths=tuple(
            INCLUDE / part
            for part in (
                "tollgate/__init__.py",
                "tollgate/config.py",
                "tollgate/extensions.py",
                "tollgate/data/__init__.py",
                "tollgate/data/schema.py",
                "tollgate/training",
                "tollgate_torch",
            )
        ),
        load_predictor=_load_predictor,
        input_example=_input_example,
    ),
    gate=GateMetrics.for_task(TaskType.BINARY),
    score=_score,
    registered_model="tollgate-ctr",
)
