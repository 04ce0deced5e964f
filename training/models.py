"""The tabular and sequence networks, one dataclass config each (nanoGPT style), plus the wrappers that
bake preprocessing and the calibration temperature into the exported graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


@dataclass
class LinearConfig:
    n_features: int = 10


class LinearRegression(nn.Module):
    """y = x w + b; trained with the recap's hand-written mini-batch gradient step (train.py)."""

    def __init__(self, cfg: LinearConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.zeros(cfg.n_features, 1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias  # [B, F] @ [F, 1] -> [B, 1]


@dataclass
class MLPConfig:
    n_features: int
    n_outputs: int  # 1 for a sigmoid output, C for softmax
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    activation: str = "relu"  # a key of ACTIVATIONS
    dropout: float = 0.0
    batch_norm: bool = False


class MLP(nn.Module):
    """Stacked regressions: (Linear -> [BatchNorm] -> activation -> [Dropout]) * k -> Linear."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        width = cfg.n_features
        for h in cfg.hidden:
            layers.append(nn.Linear(width, h))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(ACTIVATIONS[cfg.activation]())
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            width = h
        layers.append(nn.Linear(width, cfg.n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B, F] -> [B, n_outputs] logits


@dataclass
class RecurrentConfig:
    cell: str = "lstm"  # rnn | lstm | gru
    n_inputs: int = 8  # pixels per row
    hidden: int = 64
    layers: int = 1
    n_classes: int = 10


class RecurrentClassifier(nn.Module):
    """Reads the rows of a digit one at a time; classifies from the last hidden state."""

    def __init__(self, cfg: RecurrentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        rnn_cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cfg.cell]
        self.rnn = rnn_cls(cfg.n_inputs, cfg.hidden, num_layers=cfg.layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # [B, T, 8] -> [B, T, H]
        return self.head(out[:, -1])  # last step [B, H] -> [B, C]


class Standardize(nn.Module):
    """(x - mean) / std with the training split's statistics, so clients send raw features."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float().clone())
        # A feature constant in training (e.g. an always-blank corner pixel) keeps scale 1, as
        # scikit-learn's StandardScaler does, instead of blowing up any non-zero value a client sends.
        self.register_buffer("std", torch.where(std.float() < 1e-6, 1.0, std.float()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Servable(nn.Module):
    """What gets exported: raw input -> standardize -> network -> outputs.

    kind "regression": prediction = net(z) * target_std + target_mean.
    kind "binary"/"multiclass": (logits, sigmoid/softmax(logits / T)).
    """

    def __init__(
        self,
        net: nn.Module,
        prep: nn.Module,
        kind: str,
        temperature: float = 1.0,
        target_scale: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        self.net, self.prep, self.kind = net, prep, kind
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.register_buffer("target_mean", torch.tensor(float(target_scale[0])))
        self.register_buffer("target_std", torch.tensor(float(target_scale[1])))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(self.prep(x))  # [B, ...] -> [B, K]
        if self.kind == "regression":
            return (out * self.target_std + self.target_mean,)
        scaled = out / self.temperature
        probs = torch.sigmoid(scaled) if self.kind == "binary" else torch.softmax(scaled, dim=-1)
        return out, probs
