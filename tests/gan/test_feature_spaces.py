"""The label-free feature space: trained without labels, it separates what differs and has no
class metrics to fake; the zoo's targets and report follow the space they were measured in."""

import math

import torch

from gandefect.evaluate.features import (
    CONTRASTIVE,
    FeatureNet,
    FeatureNetConfig,
    knn_accuracy,
    nt_xent,
    train_contrastive_net,
)
from gandefect.evaluate.generators import generator_metrics
from gandefect.stages.gans import ZooSetup, write_zoo_report, zoo_table


def _two_kinds(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour images of two kinds: horizontal stripes and vertical stripes, random phase and tint."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.arange(16, dtype=torch.float32)
    kind = torch.arange(n) % 2
    phase = torch.rand(n, generator=g) * 6.28
    wave = torch.sin(coords[None, :] * 1.2 + phase[:, None])  # (n, 16)
    rows = wave[:, :, None].expand(n, 16, 16)
    images = torch.where(kind[:, None, None] == 0, rows, rows.transpose(1, 2))
    tint = 0.5 + 0.5 * torch.rand(n, 3, 1, 1, generator=g)
    return (images[:, None] * tint).clamp(-1, 1), kind


def test_nt_xent_is_low_when_each_view_finds_its_partner():
    a = torch.eye(8)
    assert float(nt_xent(a, a.clone(), 0.1)) < 0.01
    assert float(nt_xent(a, a[torch.randperm(8, generator=torch.Generator().manual_seed(0))], 0.1)) > 1.0


def test_a_contrastive_space_learns_structure_without_labels():
    images, kind = _two_kinds(256, seed=0)
    cfg = FeatureNetConfig(image_size=16, channels=3, n_classes=0, n_features=32, space=CONTRASTIVE)
    net = train_contrastive_net(cfg, images, epochs=3, batch_size=64, seed=0)
    assert not net.labelled and not hasattr(net, "classify")
    test, test_kind = _two_kinds(64, seed=1)
    assert knn_accuracy(net, images, kind, test, test_kind) >= 0.9  # labels only check it, never train it
    untrained = FeatureNet(cfg).eval()
    assert (
        knn_accuracy(net, images, kind, test, test_kind) > knn_accuracy(untrained, images, kind, test, test_kind) - 0.05
    )


def test_label_free_metrics_leave_the_class_metrics_out_and_the_report_says_why(tmp_path):
    net = FeatureNet(FeatureNetConfig(image_size=16, channels=3, n_classes=0, n_features=32, space=CONTRASTIVE)).eval()
    real, _ = _two_kinds(64, seed=2)
    metrics = generator_metrics(net, real, torch.rand(64, 3, 16, 16) * 2 - 1)
    assert set(metrics) == {"fid", "precision", "recall"} and all(math.isfinite(v) for v in metrics.values())
    table = zoo_table({"hinge": {**metrics, "fid_ratio": 0.05}, "wgan": {**metrics, "fid_ratio": 0.5}})
    assert "class_entropy_ratio" not in table.columns and list(table["meets_targets"]) == ["yes", "no"]
    report = write_zoo_report(table, metrics, ZooSetup("v1", float("nan"), metrics, CONTRASTIVE), tmp_path / "zoo.md")
    text = report.read_text()
    assert "label-free feature space" in text and "Class entropy and the confident rate are absent" in text
