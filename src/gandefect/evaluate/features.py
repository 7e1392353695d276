"""The domain feature net: the feature space for FID and precision/recall, trained on the real
train split in one of two ways.

- `labelled`: a classifier of the images' class labels; its penultimate layer is the space and
  its softmax gives the sample-class histograms (class entropy, confident rate).
- `contrastive`: no labels. The same network is trained self-supervised (SimCLR, Chen et al.
  2020: two random views of each image are pulled together, other images pushed apart). Chosen
  over an autoencoder because a reconstruction objective keeps pixel-level detail (noise,
  exact position) that FID should not weigh, while contrastive features are invariant to the
  nuisance changes of the views and keep what tells one image's content from another's;
  self-supervised spaces rank GANs as well as supervised ones (Morozov et al., ICLR 2021).
  There is no class head, so the label metrics are absent rather than guessed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gandefect.config import DataConfig, FeaturesConfig
from gandefect.hardware import CPU, placed

LABELLED, CONTRASTIVE = "labelled", "contrastive"


@dataclass(kw_only=True)
class FeatureNetConfig:
    """The feature net's shape, built from the `data` and `features` sections by name."""

    image_size: int = DataConfig.model_fields["image_size"].default
    channels: int = 1
    n_classes: int = 10  # 0 in the contrastive space: no class head
    n_features: int = FeaturesConfig.model_fields["n_features"].default
    space: str = LABELLED


class FeatureNet(nn.Module):
    """conv-conv-pool x2 -> global average -> `n_features` (the embedding) -> class logits."""

    def __init__(self, cfg: FeatureNetConfig):
        super().__init__()
        self.cfg = cfg

        def block(cin, cout):
            return [
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
                nn.MaxPool2d(2),
            ]

        self.body = nn.Sequential(*block(cfg.channels, 32), *block(32, 64), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(64 * 4, cfg.n_features), nn.ReLU(True))
        if self.labelled:
            self.classify = nn.Sequential(nn.Dropout(0.3), nn.Linear(cfg.n_features, cfg.n_classes))
        else:  # SimCLR's projection head: the loss is taken after it, the features before it
            self.project = nn.Sequential(
                nn.Linear(cfg.n_features, cfg.n_features), nn.ReLU(True), nn.Linear(cfg.n_features, 64)
            )

    @property
    def labelled(self) -> bool:
        return getattr(self.cfg, "space", LABELLED) == LABELLED  # nets logged before the field: labelled

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (labelled) or the projection the contrastive loss is taken on."""
        return (self.classify if self.labelled else self.project)(self.features(x))


class FeatureExtractor(nn.Module):
    """The feature net as a frozen feature map: images in [-1, 1] -> float32 features, eval mode."""

    def __init__(self, net: FeatureNet):
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):  # a caller's .train() leaves the net frozen, in eval mode
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
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1  # pad with black


def _views(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random view for contrastive training: a stronger crop and jitter than `_augment`, a
    random gain and offset per channel (all channels alike on gray images), a mirror on colour
    images (a mirrored digit is another symbol), and a little noise."""
    n, c = x.shape[:2]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(15)
    scale = 0.7 + 0.4 * torch.rand(n, generator=gen)  # < 1 zooms in: a crop of 70 % of the side
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.15
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if c == 3 else torch.ones(n)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    v = F.grid_sample(x + 1, grid, align_corners=False, padding_mode="reflection") - 1
    shared = torch.rand(n, 1, 1, 1, generator=gen)
    own = torch.rand(n, c, 1, 1, generator=gen)
    gain = 0.6 + 0.6 * (0.5 * shared + 0.5 * own)  # colour jitter: mostly brightness, some hue
    offset = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * 0.2
    noise = 0.05 * torch.randn(v.shape, generator=gen)  # drawn on the CPU: the same views on every device
    gain, offset, noise = gain.to(x.device), offset.to(x.device), noise.to(x.device)
    return (v * gain + offset + noise).clamp(-1, 1)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view must find its partner among all 2N-1 other views."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(a)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(a.device)
    return F.cross_entropy(sim, partner)


def _fit(
    net: FeatureNet,
    n: int,
    batch_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    epochs: int,
    batch_size: int,
    lr: float,
    gen: torch.Generator,
    on_epoch: Callable[[int, float], None] | None,
    device: torch.device = CPU,
) -> FeatureNet:
    """AdamW with a one-cycle schedule over `epochs` of shuffled batches of `n` images;
    `batch_loss(indices, gen)` is the objective. Trains on `device`; returns the net in eval
    mode, on the CPU."""
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * (n // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    step = 0
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n - batch_size + 1, batch_size):
            loss = batch_loss(perm[i : i + batch_size], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step < steps - 1:
                sched.step()
            step += 1
            total += loss.item()
        if on_epoch:
            on_epoch(epoch, total / max(1, n // batch_size))
    return net.to(CPU).eval()


def train_contrastive_net(
    cfg: FeatureNetConfig,
    images: torch.Tensor,
    epochs: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    temperature: float = 0.2,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    device: torch.device = CPU,
) -> FeatureNet:
    """Train the label-free space on real images in [-1, 1]; returns the net in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = FeatureNet(cfg)
    images = images.to(device)

    def batch_loss(idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = images[idx]
        return nt_xent(net(_views(x, g)), net(_views(x, g)), temperature)

    return _fit(net, len(images), batch_loss, epochs, min(batch_size, len(images)), lr, gen, on_epoch, device)


@torch.no_grad()
def knn_accuracy(
    net: FeatureNet,
    train: torch.Tensor,
    train_labels: torch.Tensor,
    test: torch.Tensor,
    test_labels: torch.Tensor,
    batch_size: int = 500,
    device: torch.device = CPU,
) -> float:
    """Nearest-neighbour (cosine) label accuracy in the feature space: how much class structure a
    label-free space learned, where labels exist to check it."""
    net.eval()

    def feats(x):
        batches = [net.features(x[i : i + batch_size].to(device)).to(CPU) for i in range(0, len(x), batch_size)]
        return F.normalize(torch.cat(batches), dim=1)

    with placed(net, device):
        nearest = (feats(test) @ feats(train).T).argmax(1)
    return float((train_labels[nearest] == test_labels).float().mean())


def train_feature_net(
    cfg: FeatureNetConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    device: torch.device = CPU,
) -> FeatureNet:
    """Train on real images in [-1, 1] with integer labels; returns the net in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = FeatureNet(cfg)
    images, labels = images.to(device), labels.to(device)

    def batch_loss(idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return F.cross_entropy(net(_augment(images[idx], g)), labels[idx], label_smoothing=0.05)

    return _fit(net, len(images), batch_loss, epochs, batch_size, lr, gen, on_epoch, device)


@torch.no_grad()
def accuracy(
    net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500, device: torch.device = CPU
) -> float:
    """Test accuracy of the labelled net's class head."""
    net.eval()
    with placed(net, device):
        correct = sum(
            int((net(images[i : i + batch_size].to(device)).argmax(1).to(CPU) == labels[i : i + batch_size]).sum())
            for i in range(0, len(images), batch_size)
        )
    return correct / max(1, len(images))
