"""Report figures (matplotlib, Agg): ROC per generator, robustness, reliability, error grid."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from gandefect.detect.common import Labeled


def roc_per_generator(p: np.ndarray, test: Labeled, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 5))
    real = test.generators == "real"
    for g in sorted(set(test.generators.tolist()) - {"real"}):
        m = real | (test.generators == g)
        fpr, tpr, _ = roc_curve(test.labels[m], p[m])
        ax.plot(fpr, tpr, label=g, lw=1)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def robustness(results: dict[str, dict[str, float]], keys: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(results))
    for i, (family, metrics) in enumerate(results.items()):
        ax.bar(np.arange(len(keys)) + i * width, [metrics[f"auc_{k}"] for k in keys], width, label=family)
    ax.set_xticks(np.arange(len(keys)) + width * (len(results) - 1) / 2, keys)
    ax.set(ylabel="AUC", ylim=(0.4, 1.0), title="AUC with both classes processed, per condition")
    ax.tick_params(axis="x", labelsize=7, rotation=45)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def wild_verdicts(results: dict[str, dict[str, float]], conditions: list[str], gated: list[str], path: Path) -> Path:
    """Per condition, at the served threshold: real images called fake (fpr_real) and the worst
    generator's samples called fake (tpr_fake), one bar pair per detector family."""
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    x = np.arange(len(conditions))
    width = 0.8 / max(1, len(results))
    for i, (family, metrics) in enumerate(results.items()):
        axes[0].bar(x + i * width, [metrics.get(f"fpr_real_{c}", np.nan) for c in conditions], width, label=family)
        axes[1].bar(x + i * width, [metrics.get(f"tpr_fake_{c}", np.nan) for c in conditions], width, label=family)
    axes[0].set(ylabel="real called fake", title="verdicts in the wild at the served threshold (* = gated)")
    axes[1].set(ylabel="fakes called fake\n(worst generator)", ylim=(0, 1.02))
    for ax in axes:
        ax.legend(fontsize=7)
    axes[1].set_xticks(
        x + width * (len(results) - 1) / 2,
        [c + ("*" if c in gated else "") for c in conditions],
        rotation=45,
        fontsize=7,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability(probs: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, n_bins: int = 10) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    edges = np.linspace(0, 1, n_bins + 1)
    for family, (p, labels) in probs.items():
        idx = np.clip(np.digitize(p, edges) - 1, 0, n_bins - 1)
        conf = [p[idx == b].mean() for b in range(n_bins) if (idx == b).any()]
        acc = [labels[idx == b].mean() for b in range(n_bins) if (idx == b).any()]
        ax.plot(conf, acc, "o-", label=family)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="predicted p(fake)", ylabel="observed fraction fake", title="reliability (test split)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def error_grid(images: np.ndarray, maps: np.ndarray, captions: list[str], path: Path, title: str) -> Path:
    """Each error as image over defect map, with its caption."""
    n = max(1, len(images))
    fig, axes = plt.subplots(2, n, figsize=(1.4 * n, 3.2), squeeze=False, layout="constrained")
    for i in range(len(images)):
        axes[0, i].imshow(images[i], cmap="gray", vmin=0, vmax=255)
        axes[0, i].set_title(captions[i], fontsize=6)
        axes[1, i].imshow(maps[i], cmap="magma", vmin=0, vmax=1)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(textwrap.fill(title, max(20, int(1.4 * n * 13))), fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def panel_grid(rows: list[tuple[str, list[np.ndarray]]], columns: list[str], path: Path, title: str) -> Path:
    """One row per example (caption, images left to right); float maps in [0, 1] use a heat map."""
    n = max(1, len(rows))
    # constrained layout keeps the title above the column headers (tight_layout ignores a suptitle)
    fig, axes = plt.subplots(
        n, len(columns), figsize=(1.3 * len(columns), 1.3 * n + 0.6), squeeze=False, layout="constrained"
    )
    for r, (caption, panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            if panel.dtype == np.uint8:
                ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=255)
            else:
                ax.imshow(panel.astype(float), cmap="magma", vmin=0, vmax=1)
            if r == 0:
                ax.set_title(columns[c], fontsize=7)
        axes[r, 0].set_ylabel(caption, fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(textwrap.fill(title, max(20, int(1.3 * len(columns) * 13))), fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
