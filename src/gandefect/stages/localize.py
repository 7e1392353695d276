"""Spliced-defect benchmark stage and the localization evaluation of a detector."""

from __future__ import annotations

import json

import pandas as pd

from gandefect.config import Config
from gandefect.evaluate.figures import Figures
from gandefect.evaluate.localization import localize
from gandefect.lifecycle.spliced import build_spliced


def run_build_spliced(cfg: Config, version: bool = True) -> tuple[pd.DataFrame, str]:
    """Write data/spliced/{images,masks}/ and manifest.csv from real val/test images and fakes."""
    return build_spliced(cfg, version)


def evaluate_localization(cfg: Config, detector) -> Figures:
    """`localize`, with the figures (and why any is missing) written to reports/localization.json."""
    metrics = localize(cfg, detector)
    path = cfg.report_dir / "localization.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**metrics.finite(), "missing": metrics.missing}, indent=2) + "\n")
    return metrics
