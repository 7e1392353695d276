"""Score distributions: what the served detector's traffic looks like beside its validation.

The service counts the p_fake it serves in fixed buckets (a Prometheus histogram); the
detector stage stores the same histogram of the validation mix (every gated condition). The
population stability index (PSI) between them, and the share called fake in each, tell an
operator when traffic no longer looks like what the champion was judged on.
"""

from __future__ import annotations

import math
import re

import numpy as np

BUCKETS = tuple(round(0.1 * k, 1) for k in range(1, 11))  # upper edges of the p_fake buckets (le)
SHIFT_PSI = 0.25  # the usual reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 shifted
SHIFT_FLAGGED = 0.10  # absolute change of the share called fake that counts as a shift
METRIC = "gandefect_detect_p_fake"  # the service's histogram of served scores
VERDICTS = "gandefect_detect_verdicts"  # the service's counter of verdicts (fake / real / uncertain)


def histogram(p: np.ndarray) -> list[int]:
    """Counts of scores per bucket [0, 0.1], (0.1, 0.2], ... (0.9, 1.0], as Prometheus counts them (value <= le)."""
    index = np.searchsorted(np.asarray(BUCKETS), np.clip(np.asarray(p, float), 0.0, 1.0), side="left")
    return np.bincount(index, minlength=len(BUCKETS)).astype(int).tolist()


def psi(expected: list[int], actual: list[int], floor: float = 1e-4) -> float:
    """Population stability index, sum (a - e) ln(a / e) over bucket shares."""
    e = np.maximum(np.asarray(expected, float) / max(1, sum(expected)), floor)
    a = np.maximum(np.asarray(actual, float) / max(1, sum(actual)), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def _matches(labels: str, match: dict[str, str] | None) -> bool:
    return all(f'{k}="{v}"' in labels for k, v in (match or {}).items())


def parse_prometheus(text: str, name: str = METRIC, match: dict[str, str] | None = None) -> list[int]:
    """Per-bucket counts of histogram `name` in a /metrics page, over the series whose labels
    include `match`, summed over the rest (Prometheus buckets are cumulative; this undoes that)."""
    cumulative: dict[float, float] = {}
    pattern = re.compile(rf"^{re.escape(name)}_bucket\{{(?P<labels>[^}}]*)\}}\s+(?P<value>\S+)")
    for line in text.splitlines():
        m = pattern.match(line)
        if not m or not _matches(m["labels"], match):
            continue
        le = re.search(r'le="([^"]+)"', m["labels"])
        if le is None:
            continue
        edge = math.inf if le[1] == "+Inf" else float(le[1])
        cumulative[edge] = cumulative.get(edge, 0.0) + float(m["value"])
    counts, previous = [], 0.0
    for edge in BUCKETS:
        total = cumulative.get(edge, previous)
        counts.append(int(round(total - previous)))  # noqa: RUF046 - a numpy float may round to a float
        previous = total
    return counts


def parse_counter(
    text: str, name: str = VERDICTS, label: str = "verdict", match: dict[str, str] | None = None
) -> dict[str, float]:
    """Totals of counter `name` per value of `label` over the series whose labels include `match`."""
    totals: dict[str, float] = {}
    pattern = re.compile(rf"^{re.escape(name)}_total\{{(?P<labels>[^}}]*)\}}\s+(?P<value>\S+)")
    for line in text.splitlines():
        m = pattern.match(line)
        key = re.search(rf'{label}="([^"]+)"', m["labels"]) if m and _matches(m["labels"], match) else None
        if key:
            totals[key[1]] = totals.get(key[1], 0.0) + float(m["value"])
    return totals


def compare(validation: list[int], validation_flagged: float, traffic: list[int], traffic_flagged: float) -> dict:
    """PSI between the score histograms, the share called fake in each, and whether traffic has shifted."""
    value = psi(validation, traffic)
    v_share, t_share = validation_flagged, traffic_flagged
    shifted = value > SHIFT_PSI or abs(t_share - v_share) > SHIFT_FLAGGED
    return {
        "psi": value,
        "flagged_validation": v_share,
        "flagged_traffic": t_share,
        "traffic_images": int(sum(traffic)),
        "validation_images": int(sum(validation)),
        "shifted": bool(shifted),
    }
