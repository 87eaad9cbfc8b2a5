"""MLflow "model from code" for the digits CNN: pixel columns in, ten class probabilities out.

MLflow copies this file into every logged model and runs it when the model is loaded; nothing is
pickled. The trainer's output folder is the artifact ``trained``; the example's code travels in the
model's ``code/`` folder (see the example's ModelPackaging).
"""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import numpy as np


class DigitsModel(mlflow.pyfunc.PythonModel):
    """Predicts which digit an 8x8 scan shows: one row of probabilities of 0..9 per scan."""

    def load_context(self, context):
        from tollgate_examples.digits.model import load_predictor

        self._predictor = load_predictor(context.artifacts["trained"])

    # No type hints on predict: MLflow would derive a schema from them; the logged signature rules.
    def predict(self, context, model_input, params=None):
        return np.asarray(self._predictor.predict_proba(model_input), dtype="float64")


mlflow.models.set_model(DigitsModel())
