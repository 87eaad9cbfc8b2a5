"""The digits example bound to the four extension points (``tollgate_examples.digits.EXAMPLE``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tollgate.extensions import Example, GateMetrics, MetricRule, ModelPackaging, TaskType, TrainerContract
from tollgate_examples.digits.dataset import DigitScans
from tollgate_examples.digits.layout import PIXELS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from tollgate.extensions import Predictor

HERE = Path(__file__).resolve().parent
INCLUDE = HERE.parents[1]


def _load_predictor(folder: str | Path) -> Predictor:
    from tollgate_examples.digits.model import load_predictor

    return load_predictor(folder)


def _input_example(predictor: Predictor) -> pd.DataFrame:
    """Three real scans from scikit-learn's bundled digits, in the pixel columns the model reads."""
    import pandas as pd
    from sklearn.datasets import load_digits

    images = load_digits().images[:3].reshape(3, -1).astype("int64")
    return pd.DataFrame(images, columns=list(PIXELS))


def _score(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    from tollgate_examples.digits.model import evaluate

    return evaluate(labels, predictions)


EXAMPLE = Example(
    name="digits",
    dataset=DigitScans(),
    trainer=TrainerContract(
        command=("python", "-m", "tollgate_examples.digits.train"),
        experiment="tollgate-digits",
        defaults={"epochs": 10, "batch_size": 16, "lr": 0.005, "checkpoint_every": 50},
    ),
    packaging=ModelPackaging(
        model_code=HERE / "pyfunc_model.py",
        # What the pyfunc imports, and nothing else: the CNN and the scan layout.
        code_paths=(
            INCLUDE / "tollgate_examples" / "__init__.py",
            HERE / "__init__.py",
            HERE / "layout.py",
            HERE / "model.py",
        ),
        load_predictor=_load_predictor,
        input_example=_input_example,
    ),
    # The multiclass defaults, spelled out: what a user edits for their own bar.
    gate=GateMetrics(
        TaskType.MULTICLASS,
        (
            MetricRule("accuracy", True, 0.75, 0.02),
            MetricRule("macro_f1", True, 0.75, 0.02),
            MetricRule("log_loss", False, 1.00, 0.10),
        ),
    ),
    score=_score,
    registered_model="tollgate-digits",
)
