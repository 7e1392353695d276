"""The retrain flow's result and its summary, one per flow run: `reports/retrain-<date>-<run>.md`
(also the Prefect markdown artifact) and a self-contained `reports/retrain-<date>-<run>.html`
(tables, gate verdicts, picture grids inline), with `reports/retrain-latest.{md,html}` pointing
at the newest."""

from __future__ import annotations

import base64
import html
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gandefect.config import Config
from gandefect.flow_results import DetectorsResult, GateVerdict, RepairerResult
from gandefect.lifecycle.bento import BuiltBento


@dataclass
class RetrainResult:
    data_version: str
    zoo: dict[str, dict]  # member -> its figures
    detector: DetectorsResult | None  # None: the stage did not run
    repairer: RepairerResult | None
    bento: BuiltBento | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    state: str = "completed"  # completed | failed gate
    cached: list[str] = field(default_factory=list)  # tasks whose result came from the cache
    reports: list[Path] = field(default_factory=list)


def number(value) -> str:
    """A figure as a reader wants it: integers as integers, seconds and FIDs to one decimal,
    fractions to four significant digits, nothing for a missing value."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return ""
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.4g}"


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """Every numeric cell of a table formatted by `number`."""
    return df.apply(lambda col: col.map(number) if col.dtype.kind in "fiu" or col.dtype == object else col)


HEADLINE = ["auc_seen", "auc_unseen_min", "auc_jpeg75", "ece", "pixel_ap", "iou"]
REPAIR_HEADLINE = [
    "psnr_mask",
    "psnr_mask_mean_fill",
    "psnr_mask_biharmonic",
    "psnr_gain",
    "outside_mask_change",
    "worst_fid_ratio",
    "worst_judge_ratio",
]


def stage_table(r: RetrainResult) -> pd.DataFrame:
    rows = [
        {"stage": k, "seconds": round(v, 1), "cached": "yes" if k in r.cached else ""} for k, v in r.seconds.items()
    ]
    rows += [{"stage": k, "seconds": None, "cached": "yes"} for k in r.cached if k not in r.seconds]
    return pd.DataFrame(rows)


def zoo_table(r: RetrainResult) -> pd.DataFrame:
    cols = ["fid", "fid_ratio", "class_entropy_ratio", "precision", "recall", "generator_steps", "train_seconds"]
    return pd.DataFrame({loss: {c: row.get(c) for c in cols} for loss, row in r.zoo.items()}).T


def gate_table(gate: GateVerdict) -> pd.DataFrame:
    """The candidate's metrics beside the champion's on the same data (and as recorded at its
    promotion), with each row's verdict."""
    t = pd.DataFrame(gate.table)
    if t.empty:
        return t
    reasons = gate.reasons
    failed = [row for row in t["row"] if any(x.startswith((f"{row} =", f"{row} is missing")) for x in reasons)]
    missing = t["missing"].astype(bool) if "missing" in t else pd.Series(False, index=t.index)
    t["verdict"] = np.where(t["row"].isin(failed), "fail", np.where(missing, "missing", "ok"))
    return t.drop(columns=["row"]).rename(
        columns={
            "generator": "slice",
            "value": "candidate",
            "champion_value": "champion (today's data)",
            "champion_recorded": "champion (at promotion)",
        }
    )


def _verdict(name: str, part: DetectorsResult | RepairerResult) -> str:
    gate = part.gate
    if gate.passed is None:
        return f"{name}: not gated"
    before = f"v{gate.champion_before}" if gate.champion_before else "none"
    if gate.passed:
        return f"{name} v{part.version}: gate passed (champion before: {before}); aliases {gate.aliases or 'untouched'}"
    return f"{name} v{part.version}: FAILED gate (champion before: {before}, untouched)"


def _trained(r: RetrainResult):
    """(title, result, headline metrics) of the trained models the run reports on."""
    parts = (("Detector", r.detector, HEADLINE), ("Repairer", r.repairer, REPAIR_HEADLINE))
    return [(name, part, keys) for name, part, keys in parts if part is not None]


def markdown(r: RetrainResult) -> str:
    lines = [
        f"# retrain: {r.state}",
        "",
        f"Data version `{r.data_version}`.",
        "",
        readable(stage_table(r)).to_markdown(index=False),
        "",
    ]
    if r.cached:
        lines += [f"Reused from the cache (inputs unchanged): {', '.join(r.cached)}.", ""]
    if r.bento:
        lines += [
            (
                f"Bento `{r.bento.tag}` ({'reused' if r.bento.reused else 'built'}): "
                f"{', '.join(r.bento.models.values())}. Serve it: `gandefect serve` or "
                f"`bentoml serve {r.bento.tag}`."
            ),
            "",
        ]
        for role, why in r.bento.unavailable.items():
            lines += [f"Not served: {role} ({why}); its API answers 503 with this reason.", ""]
    if r.zoo:
        lines += ["## GAN zoo", "", readable(zoo_table(r)).to_markdown(), ""]
    for name, part, keys in _trained(r):
        winner = getattr(part, "winner", "")
        title = f"## {name} v{part.version}" + (f" ({winner})" if winner else "")
        lines += [title, "", _verdict(name.lower(), part), ""]
        lines += [f"- {reason}" for reason in part.gate.reasons]
        lines += [f"- reason to promote: {reason}" for reason in part.gate.improvements]
        lines += [f"- not judged, missing: {row}" for row in part.gate.not_judged]
        metrics = part.metrics
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {number(metrics[k])} |" for k in keys if k in metrics]
        t = gate_table(part.gate)
        if not t.empty:
            lines += [
                "",
                "Gate table (candidate vs the champion, both judged on today's data):",
                "",
                readable(t.drop(columns=["headroom"])).to_markdown(index=False),
            ]
        lines.append("")
    return "\n".join(lines) + "\n"


def _img(path: Path, caption: str) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}.ok{color:#17702b}.fail{color:#b00020;font-weight:600}figure{display:inline-block;margin:0 1em 1em 0}
img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}.state{font-size:1.2em}"""


def to_html(cfg: Config, r: RetrainResult, flow_run_id: str | None) -> str:
    def table(df: pd.DataFrame, index: bool = False) -> str:
        return readable(df).to_html(index=index, na_rep="", border=0) if not df.empty else ""

    cls = "ok" if r.state == "completed" else "fail"
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>gandefect retrain {time.strftime('%Y-%m-%d')}</title>",
        f"<style>{CSS}</style><h1>gandefect retrain</h1>",
        (
            f"<p class='state'>State: <span class='{cls}'>{html.escape(r.state)}</span> · data version "
            f"<code>{html.escape(r.data_version)}</code> · flow run <code>{flow_run_id or '-'}</code></p>"
        ),
        "<h2>Stages</h2>",
        table(stage_table(r)),
    ]
    if r.bento:
        parts.append(
            f"<p>Bento <code>{html.escape(r.bento.tag)}</code> "
            f"({'reused' if r.bento.reused else 'built'}): serve it with <code>gandefect serve</code> "
            f"or <code>bentoml serve {html.escape(r.bento.tag)}</code>.</p>"
        )
        for role, why in r.bento.unavailable.items():
            parts.append(
                f"<p>Not served: {html.escape(role)} ({html.escape(why)}); its API answers 503 with this reason.</p>"
            )
    if r.zoo:
        parts += ["<h2>GAN zoo</h2>", table(zoo_table(r), index=True)]
    for name, part, keys in _trained(r):
        ok = part.gate.passed
        parts += [
            f"<h2>{name} v{part.version}</h2>",
            f"<p class='{'ok' if ok or ok is None else 'fail'}'>{html.escape(_verdict(name.lower(), part))}</p>",
        ]
        if part.gate.reasons:
            parts.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in part.gate.reasons) + "</ul>")
        if part.gate.improvements:
            parts.append(
                "<p>Reasons to promote:</p><ul>"
                + "".join(f"<li>{html.escape(x)}</li>" for x in part.gate.improvements)
                + "</ul>"
            )
        metrics = part.metrics
        parts.append(table(pd.DataFrame([{k: metrics[k] for k in keys if k in metrics}])))
        t = gate_table(part.gate)
        if not t.empty:
            parts += [
                "<p>Gate table: the candidate beside the champion, both judged on today's data.</p>",
                table(t.drop(columns=["headroom"])),
            ]
    reports = cfg.report_dir
    figures = [
        _img(
            reports / "detectors" / f"roc-{r.detector.winner if r.detector else 'cnn'}.png",
            "ROC per generator (winner)",
        ),
        _img(reports / "repair" / "repair-grid.png", "repair of generated samples: input | map | mask | repaired"),
        _img(reports / "repair" / "spliced-grid.png", "spliced test images repaired inside the true mask"),
    ]
    if any(figures):
        parts += ["<h2>Pictures</h2>", *figures]
    return "\n".join(parts) + "\n"


def write_retrain_reports(cfg: Config, r: RetrainResult, flow_run_id: str | None) -> list[Path]:
    """This run's markdown and HTML summaries (named by date and flow run, never overwriting an
    earlier run's) and the `retrain-latest` links to them; returns [markdown, html]."""
    out = cfg.report_dir
    out.mkdir(parents=True, exist_ok=True)
    run = (flow_run_id or "")[:8] or time.strftime("%H%M%S")
    stem = f"retrain-{time.strftime('%Y-%m-%d')}-{run}"
    md, page = out / f"{stem}.md", out / f"{stem}.html"
    md.write_text(markdown(r))
    page.write_text(to_html(cfg, r, flow_run_id))
    for path in (md, page):
        latest = out / f"retrain-latest{path.suffix}"
        tmp = latest.with_name(f".{latest.name}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(path.name, tmp)
        os.replace(tmp, latest)
    return [md, page]
