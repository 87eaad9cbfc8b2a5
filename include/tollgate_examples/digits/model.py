"""The digits CNN, its predictor (what the pyfunc and the gates call) and the multiclass metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from tollgate_examples.digits.layout import MAX_GREY, PIXELS, SIDE

if TYPE_CHECKING:
    import pandas as pd

N_CLASSES = 10
_EPS = 1e-7


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and a linear read-out: about 3.5 k weights, trains in seconds on a CPU."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.channels = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * channels * (SIDE // 2) ** 2, N_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


def to_images(frame: pd.DataFrame) -> torch.Tensor:
    """(n, 1, 8, 8) float tensor in 0..1 from the pixel columns."""
    missing = [c for c in PIXELS if c not in frame.columns]
    if missing:
        raise ValueError(f"cannot score: the frame lacks pixel columns {missing[:5]}…")
    values = frame[list(PIXELS)].to_numpy(dtype=np.float32) / MAX_GREY
    return torch.from_numpy(values).reshape(-1, 1, SIDE, SIDE)


class Predictor:
    """A trained folder (model.pt + model_config.json) as class probabilities."""

    feature_columns = list(PIXELS)

    def __init__(self, model: DigitsCNN) -> None:
        self.model = model.eval()

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Probabilities of the digits 0..9, float64 array of shape (len(frame), 10)."""
        if len(frame) == 0:
            return np.zeros((0, N_CLASSES), dtype=np.float64)
        with torch.no_grad():
            return torch.softmax(self.model(to_images(frame)), dim=1).numpy().astype(np.float64)


def load_predictor(folder: str | Path) -> Predictor:
    folder = Path(folder)
    config_file, weights = folder / "model_config.json", folder / "model.pt"
    for required in (config_file, weights):
        if not required.is_file():
            raise FileNotFoundError(f"{required} is missing: {folder} is not a digits model folder")
    config = json.loads(config_file.read_text())
    model = DigitsCNN(int(config["channels"]))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return Predictor(model)


def evaluate(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 (mean F1 over the digits that occur in labels or predictions) and log loss."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64).reshape(len(y), N_CLASSES)
    predicted = p.argmax(axis=1)
    f1s = []
    for digit in sorted(set(y.tolist()) | set(predicted.tolist())):
        tp = int(((predicted == digit) & (y == digit)).sum())
        fp = int(((predicted == digit) & (y != digit)).sum())
        fn = int(((predicted != digit) & (y == digit)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    picked = np.clip(p[np.arange(len(y)), y], _EPS, 1.0)
    return {
        "accuracy": float((predicted == y).mean()),
        "macro_f1": float(np.mean(f1s)),
        "log_loss": float(-np.log(picked).mean()),
    }
