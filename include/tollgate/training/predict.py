"""Loading a trained model folder (model.pt + model_config.json) for scoring.

Used by the registry (wrapped as an MLflow pyfunc model), the evaluation gates and the router.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tollgate.training.features import FeatureEncoder
from tollgate.training.model import CTRModel, ModelConfig

BATCH = 65_536


class Predictor:
    def __init__(self, model: CTRModel, encoder: FeatureEncoder, config: dict) -> None:
        self.model = model.eval()
        self.encoder = encoder
        self.config = config

    @property
    def feature_columns(self) -> list[str]:
        """Input columns the model reads; other columns of the frame are ignored."""
        return list(self.encoder.feature_columns)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Click probabilities, float64 array of shape (len(df),)."""
        missing = [c for c in self.feature_columns if c not in df.columns]
        if missing:
            raise ValueError(f"cannot score: the frame lacks feature columns {missing}")
        if len(df) == 0:
            return np.zeros(0, dtype=np.float64)
        if self.config.get("serving_delay_ms"):  # a deliberately slow model (training quality=slow)
            time.sleep(float(self.config["serving_delay_ms"]) / 1000)
        cat, num = self.encoder.transform(df)
        shift = self._miscalibration(df)
        out = []
        with torch.no_grad():
            for start in range(0, len(df), BATCH):
                logits = self.model(
                    torch.from_numpy(cat[start : start + BATCH]), torch.from_numpy(num[start : start + BATCH])
                )
                if shift is not None:
                    logits = logits + torch.from_numpy(shift[start : start + BATCH])
                out.append(torch.sigmoid(logits))
        return torch.cat(out).numpy().astype(np.float64)

    def _miscalibration(self, df: pd.DataFrame) -> np.ndarray | None:
        """Logits added per row by a deliberately miscalibrated model (training quality=miscalibrated): its
        signed config names a column and a bound above which its outputs are shifted; None otherwise."""
        fault = self.config.get("miscalibration")
        if not fault:
            return None
        values = pd.to_numeric(df[fault["column"]], errors="coerce").to_numpy(dtype=np.float64)
        beyond = values > float(fault["above"])
        return np.where(beyond, float(fault["logit_shift"]), 0.0).astype(np.float32)


def load_predictor(model_dir: str | Path) -> Predictor:
    folder = Path(model_dir)
    config_file, weights = folder / "model_config.json", folder / "model.pt"
    for required in (config_file, weights):
        if not required.is_file():
            raise FileNotFoundError(f"{required} is missing: {folder} is not a Tollgate model folder")
    config = json.loads(config_file.read_text())
    model = CTRModel(ModelConfig.from_dict(config["model"]))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return Predictor(model, FeatureEncoder.from_dict(config["features"]), config)
