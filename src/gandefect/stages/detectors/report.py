"""The detectors report: reports/detectors/detectors.md and its figures."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from gandefect.config import Config
from gandefect.data import conditions
from gandefect.detect.common import Detector, Labeled
from gandefect.evaluate import plots
from gandefect.stages.detectors.fit import FamilyResult


def write_report(cfg: Config, results: dict[str, FamilyResult], test: Labeled, winner: str) -> tuple[Path, list[Path]]:
    """`reports/detectors/detectors.md`: every family's figures, the winner's verdicts in the wild,
    leave-one-family-out, and the figures it links; returns it and the figures."""
    out = cfg.report_dir / "detectors"
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(cfg, results, test, out)
    unseen = _per_family(results, "auc_unseen_", ("auc_unseen_min", "auc_unseen_mean", "auc_unseen_min_all"))
    unseen_wild = _per_family(results, "tpr_unseen_wild_", ("tpr_unseen_min",))
    lines = [
        "# Detectors",
        "",
        f"Winner (by the wild verdicts: mean share caught over generators minus the worst fpr_real, ties by auc_seen; leave-one-family-out is run for it): **{winner}**.",
        "",
        pd.DataFrame({f: {k: r.metrics.get(k, float("nan")) for k in SUMMARY} for f, r in results.items()}).to_markdown(
            floatfmt=".4f"
        ),
        "",
        f"## Verdicts in the wild ({winner}, at its served threshold {results[winner].detector.threshold:.4f})",
        "",
        (
            "Each condition is applied to one class at a time, as a client would send the file (real JPEG bytes "
            "for JPEG), and decoded by the service's upload path. fpr_real: real test images called fake; "
            "tpr_fake: the worst test generator's share called fake; uncertain_real: real images outside the "
            "validated envelope (answered `uncertain` by the service)."
        ),
        "",
        _wild_table(cfg, results[winner].metrics).to_markdown(index=False, floatfmt=".3f"),
        "",
        "## Leave-one-family-out: auc_unseen_<family> (clean) ",
        "",
        unseen.to_markdown(floatfmt=".4f") if not unseen.empty else "(disabled)",
        "",
        (
            "## Leave-one-family-out: tpr_unseen_wild_<family> (worst gated condition, the held-out family's "
            "samples called fake at the leave-one-out model's own threshold)"
        ),
        "",
        unseen_wild.to_markdown(floatfmt=".3f") if not unseen_wild.empty else "(disabled)",
        "",
        "## Figures",
        "",
    ] + [f"![{p.stem}]({p.name})" for p in figures]
    path = out / "detectors.md"
    path.write_text("\n".join(lines) + "\n")
    return path, figures


# the figures of the report's first table, one column per family
SUMMARY = [
    "auc_seen",
    "ap_seen",
    "auc_unseen_min",
    "auc_unseen_mean",
    "auc_unseen_min_all",
    "fpr_real_max",
    "tpr_wild_min",
    "tpr_unseen_min",
    "ece",
    "ece_jpeg75",
    "threshold",
    "acc_real",
    "acc_fake",
    "pixel_ap",
    "iou",
    "map_threshold",
    "train_seconds",
    "images_per_second",
]


def _figures(cfg: Config, results: dict[str, FamilyResult], test: Labeled, out: Path) -> list[Path]:
    """ROC per generator and the error grid of each family; robustness, verdicts in the wild and
    reliability of all of them."""
    w = cfg.detect.wild
    metrics = {f: r.metrics for f, r in results.items()}
    figures = [
        plots.roc_per_generator(r.p_test, test, out / f"roc-{f}.png", f"ROC per generator: {f}")
        for f, r in results.items()
    ]
    figures.append(plots.robustness(metrics, conditions.evaluated(w), out / "robustness.png"))
    figures.append(plots.wild_verdicts(metrics, conditions.evaluated(w), w.gated, out / "wild.png"))
    figures.append(plots.reliability({f: (r.p_test, test.labels) for f, r in results.items()}, out / "reliability.png"))
    for f, r in results.items():
        figures.append(_error_grid(r, test, out / f"errors-{f}.png"))
    return figures


def _error_grid(r: FamilyResult, test: Labeled, path: Path) -> Path:
    """A family's six most and six least confident errors on the test set, with their defect maps."""
    wrong = np.flatnonzero((r.p_test >= r.detector.threshold) != test.labels.astype(bool))
    confidence = np.abs(r.p_test[wrong] - r.detector.threshold)
    order = wrong[np.argsort(-confidence)]
    pick = order if len(order) <= 12 else np.r_[order[:6], order[-6:]]
    caps = [f"{test.generators[i]} p={r.p_test[i]:.2f}" for i in pick]
    maps = r.detector.defect_map(test.images[pick]) if len(pick) else np.zeros((0,) + test.images.shape[1:3])
    return plots.error_grid(
        test.images[pick], maps, caps, path, f"{r.family}: most (left) and least confident errors with defect maps"
    )


def _per_family(results: dict[str, FamilyResult], prefix: str, summaries: tuple[str, ...]) -> pd.DataFrame:
    """The figures named `<prefix><generator>` of each family (not its summaries), one column per family."""
    return pd.DataFrame(
        {
            f: {k.removeprefix(prefix): v for k, v in r.metrics.items() if k.startswith(prefix) and k not in summaries}
            for f, r in results.items()
        }
    )


def _wild_table(cfg: Config, m: dict[str, float]) -> pd.DataFrame:
    """The winner's verdicts per condition in the wild, at its served threshold."""
    w = cfg.detect.wild
    return pd.DataFrame(
        [
            {
                "condition": c,
                "gated": "yes" if c in w.gated else "no",
                "fpr_real": m.get(f"fpr_real_{c}"),
                "uncertain_real": m.get(f"uncertain_real_{c}"),
                "tpr_fake (worst generator)": m.get(f"tpr_fake_{c}"),
                "auc": m.get(f"auc_{c}"),
            }
            for c in conditions.evaluated(w)
        ]
    )


def images_per_second(detector: Detector, images: np.ndarray, n: int = 1000) -> float:
    batch = np.resize(images, (n,) + images.shape[1:])
    start = time.perf_counter()
    detector.score(batch)
    return n / (time.perf_counter() - start)
