"""The GAN's networks: an auxiliary-classifier GAN on 8x8 digits whose class code is read from the noise
itself (argmax of its first 10 entries), so the served generator needs nothing but standard-normal noise
and every class is drawn equally often."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PIXEL_MAX = 16.0


@dataclass
class GANConfig:
    latent_dim: int = 32  # noise size Z; the first n_classes entries also pick the class
    n_classes: int = 10
    hidden: int = 256
    disc_hidden: int = 256
    dropout: float = 0.3  # discriminator
    leak: float = 0.2


def class_code(noise: torch.Tensor, n_classes: int) -> torch.Tensor:
    """One-hot of argmax(noise[:, :C]) written with max/equal so it exports to plain ONNX ops."""
    head = noise[:, :n_classes]  # [B, C]
    return (head == head.max(dim=1, keepdim=True).values).float()


class Generator(nn.Module):
    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(
            nn.Linear(cfg.latent_dim + cfg.n_classes, cfg.hidden), nn.LeakyReLU(cfg.leak),
            nn.Linear(cfg.hidden, cfg.hidden), nn.LeakyReLU(cfg.leak),
            nn.Linear(cfg.hidden, 64), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        code = class_code(noise, self.cfg.n_classes)  # [B, C]
        return self.net(torch.cat([noise, code], dim=1)) * PIXEL_MAX  # [B, Z + C] -> [B, 64] in 0..16


class Discriminator(nn.Module):
    """Shared body, a real/fake logit and an auxiliary class head (used only in training)."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(64, cfg.disc_hidden), nn.LeakyReLU(cfg.leak), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.disc_hidden, cfg.disc_hidden // 2), nn.LeakyReLU(cfg.leak), nn.Dropout(cfg.dropout),
        )  # fmt: skip
        self.adv = nn.Linear(cfg.disc_hidden // 2, 1)
        self.aux = nn.Linear(cfg.disc_hidden // 2, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x / PIXEL_MAX)  # raw [B, 64] -> [B, H/2]
        return self.adv(h), self.aux(h)  # [B, 1] real/fake logit, [B, C] class logits


class RealFake(nn.Module):
    """The served discriminator: raw pixels -> the real/fake logit only."""

    def __init__(self, disc: Discriminator) -> None:
        super().__init__()
        self.disc = disc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.disc(x)[0]  # [B, 1]
