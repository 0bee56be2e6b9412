"""Observation encoders: the IMPALA CNN (Espeholt et al. 2018) for frames, an MLP for vectors."""
from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


class ImpalaCNN(nn.Module):
    """uint8 frames [N, H, W, C] -> features [N, out_dim]: per stage conv 3x3, max-pool 3x3/2 and two
    residual blocks (channels 16, 32, 32), then ReLU, flatten, fc ``out_dim`` and ReLU."""

    def __init__(self, obs_shape, channels=(16, 32, 32), out_dim: int = 256):
        super().__init__()
        height, width, in_channels = obs_shape
        stages = []
        for ch in channels:
            stages += [nn.Conv2d(in_channels, ch, 3, padding=1), nn.MaxPool2d(3, stride=2, padding=1),
                       ResidualBlock(ch), ResidualBlock(ch)]
            in_channels = ch
            height, width = (height + 1) // 2, (width + 1) // 2
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_channels * height * width, out_dim)
        self.out_dim = out_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.permute(0, 3, 1, 2).float() / 255.0
        x = torch.relu(self.stages(x)).flatten(1)
        return torch.relu(self.fc(x))


class MLPEncoder(nn.Module):
    """Vectors [N, obs_dim] -> features [N, hidden] (two ReLU layers)."""

    def __init__(self, obs_dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out_dim = hidden

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())


def make_encoder(obs_shape, hidden: int = 64, cnn_out: int = 256) -> nn.Module:
    """IMPALA CNN for [H, W, C] frames, MLP for flat vectors."""
    if len(obs_shape) == 3:
        return ImpalaCNN(obs_shape, out_dim=cnn_out)
    if len(obs_shape) == 1:
        return MLPEncoder(obs_shape[0], hidden)
    raise ValueError(f"no encoder for observations of shape {tuple(obs_shape)}: expected [H, W, C] frames or flat vectors")
