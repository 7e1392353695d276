"""Generator metrics in the domain feature space: FID (the Frechet distance, computed as
torchmetrics computes it), improved precision and recall (Kynkaanniemi et al. 2019), and, in a
labelled space only, the class histogram of samples to flag mode collapse (a label-free space
has no classes: those metrics are absent). Each set's features are computed once and shared by
every metric (the feature net is most of the metrics' cost)."""

from __future__ import annotations

import math

import torch

from gandefect.evaluate.features import FeatureExtractor, FeatureNet
from gandefect.hardware import CPU, placed

CONFIDENT = 0.9  # a sample is "confident" when the feature net's top class has p >= this


@torch.no_grad()
def _features(extractor: FeatureExtractor, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    device = next(extractor.parameters()).device
    return torch.cat([extractor(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)])


def frechet_distance(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> float:
    """FID between two feature sets: |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^1/2), in
    float64, the trace of the square root from the eigenvalues of S_r S_f (as torchmetrics does)."""
    (mu_r, s_r), (mu_f, s_f) = (_moments(f) for f in (real_feats, fake_feats))
    root_trace = torch.linalg.eigvals(s_r @ s_f).sqrt().real.sum()
    return float((mu_r - mu_f).square().sum() + s_r.trace() + s_f.trace() - 2 * root_trace)


def _moments(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = feats.double()
    if len(x) < 2:
        raise RuntimeError("FID needs at least two samples in each set")
    mu = x.mean(0)
    return mu, (x.t() @ x - len(x) * torch.outer(mu, mu)) / (len(x) - 1)


def fid(extractor: FeatureExtractor, real: torch.Tensor, fake: torch.Tensor, batch_size: int = 500) -> float:
    return frechet_distance(_features(extractor, real, batch_size), _features(extractor, fake, batch_size))


def _radii(feats: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(feats, feats)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def precision_recall(real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Precision: share of fakes inside the real manifold (union of k-NN balls); recall: vice versa.
    A set of at most k points takes all its other points as neighbours (k = n - 1)."""
    real_r, fake_r = _radii(real_feats, min(k, len(real_feats) - 1)), _radii(fake_feats, min(k, len(fake_feats) - 1))
    d = torch.cdist(fake_feats, real_feats)  # [n_fake, n_real]
    precision = (d <= real_r[None, :]).any(dim=1).float().mean().item()
    recall = (d.T <= fake_r[None, :]).any(dim=1).float().mean().item()
    return precision, recall


@torch.no_grad()
def class_stats(net: FeatureNet, features: torch.Tensor) -> dict[str, float]:
    """Entropy (nats) of the predicted-class histogram and the share of confident samples, from
    the samples' features (the labelled net's classifier head on them)."""
    top, cls = net.classify(features).softmax(1).max(1)
    hist = torch.bincount(cls, minlength=net.cfg.n_classes).float()
    p = hist / hist.sum()
    entropy = max(0.0, float(-(p[p > 0] * p[p > 0].log()).sum()))  # no "-0.0" for a single class
    return {
        "class_entropy": entropy,
        "class_entropy_ratio": entropy / math.log(net.cfg.n_classes),
        "confident_rate": float((top >= CONFIDENT).float().mean()),
    }


def generator_metrics(
    net: FeatureNet, real: torch.Tensor, fake: torch.Tensor, k: int = 3, device: torch.device = CPU
) -> dict[str, float]:
    """All generator metrics of docs/architecture.md ("The GAN zoo") for one set of samples against real test images
    (the class metrics only where `net` is the labelled space), computed on `device`."""
    with placed(net, device), torch.no_grad():
        extractor = FeatureExtractor(net)
        real_feats, fake_feats = _features(extractor, real), _features(extractor, fake)
        precision, recall = precision_recall(real_feats, fake_feats, k)
        labelled = class_stats(net, fake_feats) if net.labelled else {}
        return {"fid": frechet_distance(real_feats, fake_feats), "precision": precision, "recall": recall, **labelled}
