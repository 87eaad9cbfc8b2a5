"""The CTR model: one embedding per categorical column, concatenated with the numerics, into an MLP.

No dropout: every source of randomness in training is the seeded init and the shuffling, both
captured in checkpoints, which keeps resumed runs bit-identical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    cardinalities: tuple[int, ...]
    n_numeric: int
    embedding_dim: int
    hidden_units: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(
            cardinalities=tuple(int(c) for c in data["cardinalities"]),
            n_numeric=int(data["n_numeric"]),
            embedding_dim=int(data["embedding_dim"]),
            hidden_units=tuple(int(u) for u in data["hidden_units"]),
        )


class CTRModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = nn.ModuleList(nn.Embedding(n, config.embedding_dim) for n in config.cardinalities)
        width = config.embedding_dim * len(config.cardinalities) + config.n_numeric
        layers: list[nn.Module] = []
        for units in config.hidden_units:
            layers += [nn.Linear(width, units), nn.ReLU()]
            width = units
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        for table in self.embeddings:
            nn.init.normal_(table.weight, std=0.05)

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        """Click logits, shape [batch]."""
        embedded = [table(categorical[:, i]) for i, table in enumerate(self.embeddings)]
        return self.mlp(torch.cat([*embedded, numeric], dim=1)).squeeze(1)
