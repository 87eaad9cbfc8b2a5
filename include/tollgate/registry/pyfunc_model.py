"""MLflow "model from code" for the click-through model: a pyfunc wrapping the trainer's predictor.

MLflow copies this file into every logged model and runs it when the model is loaded; nothing is
pickled. Input: a pandas DataFrame with the predictor's feature columns (see the model signature).
Output: click probabilities, one float per row. The trainer's own files (weights, feature encoding,
result.json) are the artifact ``trained``; the trainer code travels in the model's ``code/`` folder.
"""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import numpy as np

TRAINED_ARTIFACT = "trained"  # must equal tollgate.registry.names.TRAINED_FILES_DIR


class CTRClickModel(mlflow.pyfunc.PythonModel):
    """Predicts the probability that an ad impression is clicked."""

    def load_context(self, context):
        from tollgate.training.predict import load_predictor

        self._predictor = load_predictor(context.artifacts[TRAINED_ARTIFACT])

    # No type hints on predict: MLflow would try to derive a schema from them; the logged signature rules.
    def predict(self, context, model_input, params=None):
        return np.asarray(self._predictor.predict_proba(model_input), dtype="float64")


mlflow.models.set_model(CTRClickModel())
