"""The reward MLP that both the LAION aesthetic predictor and ImageReward put on top of their backbones.

input → 1024 → 128 → 64 → 16 → 1, dropouts between the first four layers, no activations. The module layout is the
references' own (`layers.0`, `layers.2`, `layers.4`, `layers.6`, `layers.7`), so their checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class RewardMLP(nn.Module):
    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    @torch.no_grad()
    def randomize_(self) -> RewardMLP:
        """Variance-preserving random weights (std 1/√fan-in), so a tiny random head's scores spread over O(1)
        instead of collapsing towards a constant as five default-initialised linear layers would."""
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
                nn.init.normal_(layer.bias, std=0.02)
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)
