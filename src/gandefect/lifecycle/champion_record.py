"""The champion on today's data: one record per served model, per generator figures, alerts.

The detector stage writes the record whenever it judges a candidate (the champion after the
gate, on the candidate's data); `gandefect watch` writes it after re-evaluating the champion
on the current data; `gandefect status` reads it. A generator whose figure is below its gate
floor is an alert: the champion misses it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from gandefect.config import Config, ModelGateConfig
from gandefect.data.fakes import family_of
from gandefect.evaluate.figures import wilson

WATCH_DIR = "watch"
WATCHED = ("auc_gen", "tpr_fake_wild")  # per-generator figures the champion must keep above their floors


@dataclass
class ChampionFigures:
    name: str  # registered model
    version: str
    data_version: str
    fakes_version: str
    source: str  # "gate" (judged beside a candidate) or "watch"
    metrics: dict[str, float]
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))
    trained_on: list[str] = field(default_factory=list)  # the generators the champion's weights have seen


def to_learn(figures: ChampionFigures, gate: ModelGateConfig) -> list[str]:
    """Generators the champion misses and never trained on: samples a retrain would learn from
    (a miss on a generator it was trained on is not mended by training on the same data again)."""
    seen = set(figures.trained_on)
    table = per_generator(figures.metrics, gate)
    return [g for g, status in zip(table["generator"], table["status"]) if status != "ok" and g not in seen]


def record_path(cfg: Config, name: str) -> Path:
    return cfg.report_dir / WATCH_DIR / f"{name}.json"


def write(cfg: Config, figures: ChampionFigures) -> Path:
    path = record_path(cfg, figures.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(figures), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read(cfg: Config, name: str) -> ChampionFigures | None:
    path = record_path(cfg, name)
    if not path.exists():
        return None
    return ChampionFigures(**json.loads(path.read_text()))


def per_generator(metrics: dict[str, float], gate: ModelGateConfig) -> pd.DataFrame:
    """One row per generator: its family, each watched figure, and whether it is below the floor
    the gate holds it to (a few-shot family's where it was ingested with few images)."""
    generators = sorted({k.removeprefix(f"{m}_") for m in WATCHED for k in metrics if k.startswith(f"{m}_")})
    rows = []
    for g in generators:
        row = {"generator": g, "family": family_of(g)}
        floors = gate.floors_for(metrics, g)
        below = []
        for m in WATCHED:
            value = metrics.get(f"{m}_{g}")
            row[m] = value
            if value is not None and m in floors and value < floors[m]:
                below.append(f"{m} {value:.3f} < {floors[m]:.2f}")
        counts = [metrics.get(f"n_{split}_{g}") for split in ("train", "val", "test")]
        row["train/val/test"] = "/".join("?" if n is None else f"{n:.0f}" for n in counts)
        lo, hi = wilson(row["tpr_fake_wild"], counts[2])
        row["tpr_fake_wild 95 %"] = "" if pd.isna(lo) else f"{lo:.2f}-{hi:.2f}"
        row["status"] = "MISSES: " + ", ".join(below) if below else "ok"
        rows.append(row)
    return pd.DataFrame(
        rows, columns=["generator", "family", *WATCHED, "tpr_fake_wild 95 %", "train/val/test", "status"]
    )


def alerts(figures: ChampionFigures, gate: ModelGateConfig) -> list[str]:
    """One line per generator the champion misses."""
    table = per_generator(figures.metrics, gate)
    return [
        f"{figures.name} v{figures.version} misses `{r.generator}` (family {r.family}): "
        f"{r.status.removeprefix('MISSES: ')}"
        for r in table.itertuples()
        if r.status != "ok"
    ]
