"""The domain feature net: a small classifier of real images whose penultimate layer is the
feature space for FID and precision/recall, and whose softmax gives sample-class histograms."""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class FeatureNetConfig:
    image_size: int = 28
    channels: int = 1
    n_classes: int = 10
    n_features: int = 128


class FeatureNet(nn.Module):
    """conv-conv-pool x2 -> global average -> `n_features` (the embedding) -> class logits."""

    def __init__(self, cfg: FeatureNetConfig):
        super().__init__()
        self.cfg = cfg
        self.num_features = cfg.n_features  # read by torchmetrics' FID

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True),
                    nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True), nn.MaxPool2d(2)]

        self.body = nn.Sequential(*block(cfg.channels, 32), *block(32, 64), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(64 * 4, cfg.n_features), nn.ReLU(True))
        self.classify = nn.Sequential(nn.Dropout(0.3), nn.Linear(cfg.n_features, cfg.n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


class FeatureExtractor(nn.Module):
    """Adapter for torchmetrics: images in [-1, 1] -> float64 features; frozen, eval mode."""

    def __init__(self, net: FeatureNet):
        super().__init__()
        self.net = net.eval()
        self.num_features = net.cfg.n_features
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):  # torchmetrics may call .train(); the net stays frozen
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x.float())


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-image random affine jitter (rotation +-10 deg, scale 0.9-1.1, shift +-2 px)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (4.0 / x.shape[-1])  # 2 px in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1  # pad with black


def train_feature_net(
    cfg: FeatureNetConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> FeatureNet:
    """Train on real images in [-1, 1] with integer labels; returns the net in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = FeatureNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * (len(images) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    step = 0
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(images), generator=gen)
        total = 0.0
        for i in range(0, len(images) - batch_size + 1, batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(net(_augment(images[idx], gen)), labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step < steps - 1:
                sched.step()
            step += 1
            total += loss.item()
        if on_epoch:
            on_epoch(epoch, total / max(1, len(images) // batch_size))
    return net.eval()


@torch.no_grad()
def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    net.eval()
    correct = sum(int((net(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(images), batch_size))
    return correct / max(1, len(images))
