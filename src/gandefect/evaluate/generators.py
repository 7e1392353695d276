"""Generator metrics in the domain feature space: FID (torchmetrics), improved precision and
recall (Kynkaanniemi et al. 2019), and, in a labelled space only, the class histogram of
samples to flag mode collapse (a label-free space has no classes: those metrics are absent)."""

from __future__ import annotations

import math

import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from gandefect.evaluate.features import FeatureExtractor, FeatureNet
from gandefect.hardware import CPU, placed

CONFIDENT = 0.9  # a sample is "confident" when the feature net's top class has p >= this


@torch.no_grad()
def _features(extractor: FeatureExtractor, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    device = next(extractor.parameters()).device
    return torch.cat([extractor(images[i:i + batch_size].to(device)) for i in range(0, len(images), batch_size)])


def fid(extractor: FeatureExtractor, real: torch.Tensor, fake: torch.Tensor, batch_size: int = 500) -> float:
    device = next(extractor.parameters()).device
    metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False, normalize=True).to(device)
    for i in range(0, len(real), batch_size):
        metric.update(real[i:i + batch_size].to(device), real=True)
    for i in range(0, len(fake), batch_size):
        metric.update(fake[i:i + batch_size].to(device), real=False)
    return float(metric.compute())


def _radii(feats: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(feats, feats)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def precision_recall(real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Precision: share of fakes inside the real manifold (union of k-NN balls); recall: vice versa."""
    real_r, fake_r = _radii(real_feats, k), _radii(fake_feats, k)
    d = torch.cdist(fake_feats, real_feats)  # [n_fake, n_real]
    precision = (d <= real_r[None, :]).any(dim=1).float().mean().item()
    recall = (d.T <= fake_r[None, :]).any(dim=1).float().mean().item()
    return precision, recall


@torch.no_grad()
def class_stats(net: FeatureNet, images: torch.Tensor, batch_size: int = 500) -> dict[str, float]:
    """Entropy (nats) of the predicted-class histogram and the share of confident samples."""
    device = next(net.parameters()).device
    probs = torch.cat([net(images[i:i + batch_size].to(device)).softmax(1) for i in range(0, len(images), batch_size)])
    top, cls = probs.max(1)
    hist = torch.bincount(cls, minlength=net.cfg.n_classes).float()
    p = hist / hist.sum()
    entropy = max(0.0, float(-(p[p > 0] * p[p > 0].log()).sum()))  # no "-0.0" for a single class
    return {"class_entropy": entropy, "class_entropy_ratio": entropy / math.log(net.cfg.n_classes),
            "confident_rate": float((top >= CONFIDENT).float().mean())}


def generator_metrics(net: FeatureNet, real: torch.Tensor, fake: torch.Tensor, k: int = 3,
                      device: torch.device = CPU) -> dict[str, float]:
    """All generator metrics of ../DESIGN.md for one set of samples against real test images
    (the class metrics only where `net` is the labelled space), computed on `device`."""
    with placed(net, device):
        extractor = FeatureExtractor(net)
        precision, recall = precision_recall(_features(extractor, real), _features(extractor, fake), k)
        labelled = class_stats(net, fake) if net.labelled else {}
        return {"fid": fid(extractor, real, fake), "precision": precision, "recall": recall, **labelled}
