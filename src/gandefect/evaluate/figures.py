"""Figures, and the ones the data cannot support.

A figure computed from fewer than `min_samples` images of a class it needs (a generator with
two test samples, a split with no real image) is missing: NaN here, with the reason in
`Figures.missing`. Reports show the reason, MLflow runs carry it as a `missing.<figure>` tag
(not as a metric) and the model gate names it: a missing figure is never silently passed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from sklearn.metrics import roc_auc_score

Z95 = 1.959964  # the normal quantile of a two-sided 95 % interval
MISSING_TAG = "missing."  # MLflow run tag prefix: missing.<figure> = why


class Figures(dict):
    """Figure name -> value, and `missing`: figure name -> why it could not be computed."""

    def __init__(self, values: Mapping[str, float] | None = None, min_samples: int = 1):
        super().__init__()
        self.min_samples = min_samples
        self.missing: dict[str, str] = {}
        self.update(values or {})

    def __setitem__(self, key: str, value: float) -> None:
        super().__setitem__(key, value)
        missing = self.__dict__.get("missing")  # not there yet while a pickled copy is loaded
        if missing is not None and not (isinstance(value, float) and math.isnan(value)):
            missing.pop(key, None)

    def update(self, other=(), **kwargs) -> None:  # keeps `missing` in step with the values
        for key, value in dict(other, **kwargs).items():
            self[key] = value
        self.missing.update(getattr(other, "missing", {}))

    def lack(self, key: str, reason: str) -> None:
        """`key` is missing, for `reason`."""
        super().__setitem__(key, float("nan"))
        self.missing[key] = reason

    def enough(self, key: str, counts: Mapping[str, int]) -> bool:
        """Whether every count (what -> how many) reaches min_samples; if not, `key` is missing."""
        short = [f"{n} {what}" for what, n in counts.items() if n < self.min_samples]
        if short:
            self.lack(key, f"{', '.join(short)} (a figure needs at least {self.min_samples})")
        return not short

    def share(self, key: str, called: np.ndarray, what: str) -> None:
        """The share of `called` that is true, over `what`."""
        if self.enough(key, {what: len(called)}):
            self[key] = float(np.mean(called))

    def auc(
        self, key: str, labels: np.ndarray, p: np.ndarray, real: str = "real images", fake: str = "generated images"
    ) -> None:
        """ROC AUC of `p` for `labels` (1 = generated)."""
        n_fake = int(np.sum(labels))
        if self.enough(key, {real: len(labels) - n_fake, fake: n_fake}):
            self[key] = float(roc_auc_score(labels, p))

    def worst(self, key: str, parts: Iterable[str], highest: bool = False) -> None:
        """The lowest (or `highest`) of the `parts` that are present; missing when none is."""
        parts = list(parts)
        present = [self[k] for k in parts if k in self and math.isfinite(self[k])]
        if present:
            self[key] = max(present) if highest else min(present)
        else:
            why = "; ".join(f"{k}: {self.missing[k]}" for k in parts if k in self.missing)
            self.lack(key, why or "nothing to take it over")

    def mean(self, key: str, parts: Iterable[str]) -> None:
        """The mean of the `parts` that are present; missing when none is."""
        present = [self[k] for k in parts if k in self and math.isfinite(self[k])]
        if present:
            self[key] = float(np.mean(present))
        else:
            self.lack(key, "none of its parts could be computed")

    def finite(self) -> dict[str, float]:
        """The figures that are numbers (what MLflow logs as metrics)."""
        return {k: float(v) for k, v in self.items() if isinstance(v, (int, float)) and math.isfinite(v)}

    def missing_tags(self) -> dict[str, str]:
        """`missing.<figure>` -> why, for an MLflow run."""
        return {MISSING_TAG + k: v[:4000] for k, v in self.missing.items()}


def missing_from_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Figure -> why it is missing, from a run's tags."""
    return {k.removeprefix(MISSING_TAG): v for k, v in tags.items() if k.startswith(MISSING_TAG)}


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a share `p` of `n` images (95 % by default)."""
    if n is None or p is None or math.isnan(n) or n <= 0 or math.isnan(p):
        return math.nan, math.nan
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
