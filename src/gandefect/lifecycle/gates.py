"""Model gates and promotion: a Great Expectations suite over a metrics table (one row per
slice x metric) plus non-regression against the current `champion`, and the `champion` /
`challenger` aliases of the MLflow model registry (with a rollback history).

The champion and the candidate are judged on identical data: the caller re-evaluates the
champion on the candidate's evaluation data (today's test split, every current generator,
the current spliced benchmark and wild conditions) and passes those figures in; the figures
recorded at the champion's own promotion are shown beside them, never compared. Figures
that need retraining (leave-one-out) cannot be recomputed for the champion: they are
absolute floors only.

The table's columns: generator (the slice; "all" for whole-test metrics), metric, value (the
candidate), floor / ceiling (thresholds from params.yaml `gates`; `rule` says "few-shot"
where a generator ingested with few images is held to `few_shot_floor`), champion_value (the
champion on today's data), champion_recorded (at its promotion), and two derived columns the
suite checks: `headroom` (how far inside its threshold the value is; >= 0 passes) and
`regression` (how much worse than the champion on today's data; <= margin passes; empty
without a champion).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from gandefect.config import Config, ModelGateConfig
from gandefect.errors import BadInputError
from gandefect.evaluate.figures import Figures, missing_from_tags, wilson
from gandefect.lifecycle import registry
from gandefect.lifecycle.validation import ValidationReport, _summarize
from gandefect.names import REPAIRER_MODEL

SUITE_NAME = "gandefect-model"
CHAMPION, CHALLENGER = "champion", "challenger"
GATE_TAG, GATE_REASONS_TAG = "gate", "gate_reasons"  # model-version tags: the verdict of its last gate
HISTORY_TAG = "champion_history"  # registered-model tag: versions that held `champion`, oldest first
LOWER_IS_BETTER = {"ece", "fid_ratio", "outside_mask_change"}
# figures of retrained models (leave-one-out): not recomputable for a champion, so floors only
RECORDED_ONLY = ("auc_unseen", "tpr_unseen")  # (a family new since the champion: see stages.detectors.summarize_unseen)


def spec_for(cfg: Config, name: str) -> ModelGateConfig:
    """The gate settings of a registered model: the repairer's own, else the detector's."""
    return cfg.gates.repairer if name == REPAIRER_MODEL else cfg.gates


def _lower_is_better(spec: ModelGateConfig, metric: str) -> bool:
    return metric in LOWER_IS_BETTER or metric in spec.ceiling


def version_metrics(name: str, version: str) -> Figures:
    """The metrics of the run that logged model version `version` of `name`, and the figures it
    could not compute (its `missing.<figure>` tags), with their reasons."""
    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version(name, str(version))
    except Exception:  # noqa: BLE001 - MLflow raises its own exception types per store
        raise BadInputError(f"{name} has no version {version}") from None
    run_id = mv.tags.get("run_id") or mv.run_id
    if not run_id:
        return Figures()
    run = client.get_run(run_id).data
    figures = Figures(run.metrics)
    for key, why in missing_from_tags(run.tags).items():
        figures.lack(key, why)
    return figures


def alias_version(name: str, alias: str) -> str | None:
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - no such alias or model
        return None


def served_uri(name: str, hint: str) -> str:
    """models:/name@champion when a champion is set, else the newest version."""
    return f"models:/{name}@{CHAMPION}" if alias_version(name, CHAMPION) else registry.latest_uri(name, hint)


def recorded_only(metric: str) -> bool:
    return metric.startswith(RECORDED_ONLY)


def count_key(metric: str, generator: str) -> str | None:
    """The figure that counts the test images a share was computed over (None: not a share)."""
    if metric.startswith("tpr_") and generator != "all":
        return f"n_test_{generator}"
    if metric.startswith("fpr_real"):
        return "n_test_real"
    return None


def _weigh_by_counts(spec: ModelGateConfig, t: pd.DataFrame, candidate: dict) -> pd.DataFrame:
    """Shares judged by how many images they come from: the interval, whether the threshold can be
    judged at that count (`small`: it cannot, and the row passes unless its whole interval misses
    the threshold), and the regression each row may show (the margin, or the champion's standard
    error times `se_multiple` where that is larger)."""
    t["n"] = [candidate.get(count_key(m, g) or "", np.nan) for m, g in zip(t["metric"], t["generator"])]
    ci = [wilson(v, n) for v, n in zip(t["value"], t["n"])]
    t["ci_low"], t["ci_high"] = [c[0] for c in ci], [c[1] for c in ci]
    at_threshold = [wilson(b, n) for b, n in zip(t["threshold"], t["n"])]
    # too few to judge: the threshold's own interval is wider than allowed, and the figure's
    # interval holds the threshold (one wholly on either side is a verdict at any count)
    t["small"] = [
        pd.notna(b) and pd.notna(lo) and (hi - lo) / 2 > spec.ci_halfwidth and vlo <= b <= vhi
        for b, (lo, hi), vlo, vhi in zip(t["threshold"], at_threshold, t["ci_low"], t["ci_high"])
    ]
    sign = np.where(t["lower"].astype(bool), -1.0, 1.0)
    # a small slice misses its floor only when even its interval's best end does
    best_end = np.where(t["lower"].astype(bool), t["ci_low"], t["ci_high"])
    small = t["small"] & t["value"].notna()
    t.loc[small, "headroom"] = (sign * (best_end - t["threshold"]))[small]
    champ = t["champion_value"].clip(0, 1)
    se = np.sqrt(champ * (1 - champ) / t["n"])
    t["allowed"] = np.fmax(spec.margin, (spec.se_multiple * se).where(t["n"] > 0))
    return t


def metrics_table(
    spec: ModelGateConfig,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    recorded: dict[str, float] | None = None,
) -> pd.DataFrame:
    """One row per (slice, metric) the gate names, with its threshold, the champion's value on
    the same (today's) data and, for reference, the value recorded at the champion's promotion;
    `missing` says why a value is missing (a Figures' reason, else that nothing computed it)."""
    rows = []

    def why(figures, key: str) -> str:
        return getattr(figures, "missing", {}).get(key, "not computed")

    def add(generator: str, metric: str, key: str) -> None:
        lower = _lower_is_better(spec, metric)
        bound = (spec.ceiling if lower else spec.floors_for(candidate, generator)).get(metric)
        value = candidate.get(key, np.nan)
        champ = np.nan if champion is None or recorded_only(metric) else champion.get(key, np.nan)
        missing = "; ".join(
            f"{who}: {why(figures, key)}"
            for who, v, figures in (("candidate", value, candidate), ("champion", champ, champion))
            if pd.isna(v) and (who == "candidate" or (champion is not None and not recorded_only(metric)))
        )
        rows.append(
            {
                "generator": generator,
                "metric": metric,
                "value": value,
                "threshold": bound,
                "champion_value": champ,
                "champion_recorded": (recorded or {}).get(key, np.nan),
                "lower": lower,
                "missing": missing,
                "rule": "few-shot" if generator != "all" and spec.few_shot(candidate, generator) else "",
            }
        )

    for metric in sorted(set(spec.floor) | set(spec.ceiling) | set(spec.compare)):
        if metric not in spec.per_generator:
            add("all", metric, metric)
    # few-shot generators also get a row for each few-shot floor no per-generator metric names
    extra = [m for m in spec.few_shot_floor if m not in spec.per_generator]
    for metric in [*spec.per_generator, *extra]:
        prefix = f"{metric}_"
        gens = {k.removeprefix(prefix) for k in [*candidate, *(champion or {})] if k.startswith(prefix)}
        if metric in extra:
            gens = {g for g in gens if spec.few_shot(candidate, g)}
        for gen in sorted(gens):
            add(gen, metric, prefix + gen)
    t = pd.DataFrame(
        rows,
        columns=[
            "generator",
            "metric",
            "value",
            "threshold",
            "champion_value",
            "champion_recorded",
            "lower",
            "missing",
            "rule",
        ],
    )
    sign = np.where(t["lower"].astype(bool), -1.0, 1.0)
    t["headroom"] = sign * (t["value"] - t["threshold"])
    t.loc[t["threshold"].isna(), "headroom"] = 0.0
    # a thresholded metric the candidate lacks fails; a compare-only one fails only if the
    # champion has it on today's data (see regression)
    t.loc[t["value"].isna() & t["threshold"].notna(), "headroom"] = -np.inf
    t["regression"] = sign * (t["champion_value"] - t["value"])
    lost = t["champion_value"].notna() & t["value"].isna()  # the champion is judged on it, the candidate not
    t.loc[lost, "regression"] = np.inf
    t["row"] = t["generator"] + ":" + t["metric"]
    t = _weigh_by_counts(spec, t, candidate)
    t["over_margin"] = t["regression"] - t["allowed"]  # <= 0 passes
    return t


def improvements(table: pd.DataFrame) -> list[str]:
    """Slices where the champion, on today's data, misses its threshold and the candidate meets
    it: the reasons to promote (e.g. a new generator family the champion does not catch)."""
    out = []
    for _, r in table.iterrows():
        if pd.isna(r["threshold"]) or pd.isna(r["champion_value"]) or pd.isna(r["value"]):
            continue
        sign = -1.0 if r["lower"] else 1.0
        if sign * (r["champion_value"] - r["threshold"]) < 0 <= sign * (r["value"] - r["threshold"]):
            what = f"`{r['generator']}`" if r["generator"] != "all" else "the whole test set"
            out.append(
                f"champion misses {what} ({r['metric']} {r['champion_value']:.3f}, "
                f"{'ceiling' if r['lower'] else 'floor'} {r['threshold']:.3f}); candidate {r['value']:.3f}"
            )
    return out


def run_suite(spec: ModelGateConfig, table: pd.DataFrame) -> ValidationReport:
    """The model suite, run with a real (ephemeral) Great Expectations context."""
    import great_expectations as gx  # lazy: importing Great Expectations takes seconds, and only a gate needs it

    E = gx.expectations
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=1))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="headroom", min_value=0))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="over_margin", max_value=0))
    data = table.drop(columns=["lower", "small", "rule"])
    numeric = data.select_dtypes("number").columns
    data[numeric] = data[numeric].replace([np.inf, -np.inf], [1e9, -1e9])
    batch = (
        context.data_sources.add_pandas("metrics")
        .add_dataframe_asset("table")
        .add_batch_definition_whole_dataframe("all")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="model-gate", data=batch, suite=context.suites.add(suite))
    )
    result = definition.run(
        batch_parameters={"dataframe": data},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["row"]},
    )
    return ValidationReport(SUITE_NAME, bool(result.success), len(table), [_summarize(r) for r in result.results])


@dataclass
class GateResult:
    name: str
    version: str
    champion: str | None
    passed: bool
    reasons: list[str]
    table: pd.DataFrame
    improvements: list[str] = field(default_factory=list)  # why promote: slices the champion misses
    not_judged: list[str] = field(default_factory=list)  # rows with no figure to judge, and why
    report: Path | None = None
    aliases: dict[str, str] = field(default_factory=dict)


def _reasons(table: pd.DataFrame) -> list[str]:
    out = []
    for _, r in table.iterrows():
        bound = "at most" if r["lower"] else "at least"
        if pd.isna(r["value"]) and pd.notna(r["threshold"]):
            out.append(
                f"{r['row']} is missing ({r['missing']}), so its threshold ({bound} {r['threshold']:.4f}) "
                "cannot be checked"
            )
        elif r["headroom"] < 0:
            interval = (
                f" (95 % interval {r['ci_low']:.2f}-{r['ci_high']:.2f} of {r['n']:.0f})"
                if pd.notna(r["ci_low"])
                else ""
            )
            out.append(f"{r['row']} = {r['value']:.4f}{interval}, needs {bound} {r['threshold']:.4f}")
        if pd.notna(r["regression"]) and r["over_margin"] > 0:
            value = f"missing ({r['missing']})" if pd.isna(r["value"]) else f"{r['value']:.4f}"
            out.append(
                f"{r['row']} = {value}, worse than the champion's {r['champion_value']:.4f} "
                f"by more than {r['allowed']:.4f}"
            )
    return out


def not_judged(table: pd.DataFrame) -> list[str]:
    """Rows the gate could not judge (no threshold, and no figure to compare: missing in both
    models, or in the candidate with no champion), and thresholds a slice is too small to judge:
    shown with why, never counted as passed."""
    rows = table[table["missing"].astype(bool) & table["threshold"].isna() & table["regression"].isna()]
    out = [f"{r['row']}: {r['missing']}" for _, r in rows.iterrows()]
    for _, r in table[table["small"] & table["value"].notna()].iterrows():
        out.append(
            f"{r['row']}: {r['value']:.3f} from {r['n']:.0f} test images (95 % interval "
            f"{r['ci_low']:.2f}-{r['ci_high']:.2f}) is too few to judge the threshold {r['threshold']:.2f}: "
            "refused only when the whole interval misses it"
        )
    return out


def gate(
    cfg: Config,
    name: str,
    version: str,
    candidate: dict[str, float] | None = None,
    champion_today: dict[str, float] | None = None,
) -> GateResult:
    """Judge model version `version` of `name` against the thresholds and the current champion.

    `candidate`: its figures on today's data (default: those logged by its run). `champion_today`:
    the champion re-evaluated on the same data; required when there is a champion other than
    `version`, since figures computed on other data are not comparable."""
    champion = alias_version(name, CHAMPION)
    other = champion if champion and champion != str(version) else None
    if other and champion_today is None:
        raise BadInputError(f"{name}: re-evaluate champion v{other} on the candidate's data before the gate")
    spec = spec_for(cfg, name)
    recorded = version_metrics(name, other) if other else None
    table = metrics_table(
        spec,
        candidate if candidate is not None else version_metrics(name, version),
        champion_today if other else None,
        recorded,
    )
    report = run_suite(spec, table)
    reasons = _reasons(table)
    passed = report.success and not reasons
    result = GateResult(
        name, str(version), champion, passed, reasons, table, improvements(table) if other else [], not_judged(table)
    )
    result.report = _write(cfg, result, report)
    return result


def _write(cfg: Config, result: GateResult, report: ValidationReport) -> Path:
    out = cfg.report_dir / "gates"
    out.mkdir(parents=True, exist_ok=True)
    verdict = "PASSED" if result.passed else "FAILED"
    lines = [
        f"# Model gate: {result.name} v{result.version}: {verdict}",
        "",
        (
            f"Champion: {('v' + result.champion) if result.champion else 'none'}; "
            f"margin {spec_for(cfg, result.name).margin}."
        ),
        "",
    ]
    lines += [f"- {r}" for r in result.reasons] + ([""] if result.reasons else [])
    lines += [
        (
            "A share with its test count is judged by its 95 % interval: a slice too small for its threshold "
            "is refused only when the whole interval misses it, and a slice may trail the champion by its "
            "standard error (`regression allowed`) where that exceeds the margin."
        ),
        "",
    ]
    if result.improvements:
        lines += ["Reasons to promote:", ""] + [f"- {r}" for r in result.improvements] + [""]
    if result.not_judged:
        lines += (
            ["Not judged (no threshold and no figure from the data, or too few images for the threshold):", ""]
            + [f"- {r}" for r in result.not_judged]
            + [""]
        )
    lines += [
        (
            "Both models are judged on today's data; `champion (at promotion)` is what the champion's "
            "own run recorded (other data: shown, not compared). Leave-one-out figures are floors only."
        ),
        "",
        table_markdown(result.table),
        "",
        report.to_markdown("GX suite").strip(),
    ]
    path = out / f"{result.name}-v{result.version}.md"
    path.write_text("\n".join(lines) + "\n")
    (path.with_suffix(".json")).write_text(
        json.dumps(
            {
                "name": result.name,
                "version": result.version,
                "champion": result.champion,
                "passed": result.passed,
                "reasons": result.reasons,
                "improvements": result.improvements,
                "not_judged": result.not_judged,
                "suite": report.to_dict(),
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    return path


TABLE_COLUMNS = {
    "generator": "slice",
    "metric": "metric",
    "value": "candidate",
    "n": "test images",
    "ci_low": "95 % low",
    "ci_high": "95 % high",
    "threshold": "threshold",
    "rule": "floor",
    "champion_value": "champion (today's data)",
    "champion_recorded": "champion (at promotion)",
    "headroom": "headroom",
    "regression": "regression",
    "allowed": "regression allowed",
    "missing": "missing (why)",
}


def table_markdown(table: pd.DataFrame) -> str:
    return table[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS).to_markdown(index=False, floatfmt=".4f")


# -- aliases ------------------------------------------------------------------------------------
def _history(name: str) -> list[str]:
    tags = mlflow.MlflowClient().get_registered_model(name).tags
    return [v for v in tags.get(HISTORY_TAG, "").split(",") if v]


def promote(name: str, version: str) -> str | None:
    """Point `champion` at `version` (remembering the previous champion); returns the previous one."""
    client = mlflow.MlflowClient()
    version = str(version)
    version_metrics(name, version)  # a clear error for a version that does not exist
    previous = alias_version(name, CHAMPION)
    if previous == version:
        return previous
    client.set_registered_model_alias(name, CHAMPION, version)
    history = _history(name) or ([previous] if previous else [])
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history + [version]))
    return previous


def rollback(name: str) -> tuple[str, str]:
    """Move `champion` back to the version that held it before; returns (from, to)."""
    history = _history(name)
    current = alias_version(name, CHAMPION)
    if current is None or len(history) < 2:
        raise BadInputError(f"{name}: no previous champion to roll back to")
    history = history[:-1]
    target = history[-1]
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    return current, target


def apply_gate(cfg: Config, result: GateResult) -> GateResult:
    """Passed: `challenger` -> the candidate, and `champion` too when gates.auto_promote. Failed: nothing
    moves. The version keeps its verdict (tags `gate`, `gate_reasons`: what the service says when
    a repairer has no champion)."""
    client = mlflow.MlflowClient()
    client.set_model_version_tag(result.name, result.version, GATE_TAG, "passed" if result.passed else "failed")
    client.set_model_version_tag(result.name, result.version, GATE_REASONS_TAG, "; ".join(result.reasons)[:4000])
    if result.passed:
        mlflow.MlflowClient().set_registered_model_alias(result.name, CHALLENGER, result.version)
        result.aliases[CHALLENGER] = result.version
        if cfg.gates.auto_promote:
            promote(result.name, result.version)
            result.aliases[CHAMPION] = result.version
    return result


def status(names: list[str]) -> list[dict]:
    """Per registered model: champion, challenger, latest version, the champion's data version and metrics."""
    client = mlflow.MlflowClient()
    rows = []
    for name in names:
        latest = registry.latest_version(name)
        if latest is None:
            rows.append({"model": name, "champion": None, "challenger": None, "latest": None})
            continue
        champion = alias_version(name, CHAMPION)
        row = {
            "model": name,
            "champion": champion,
            "challenger": alias_version(name, CHALLENGER),
            "latest": str(latest.version),
            "history": _history(name),
        }
        if champion:
            mv = client.get_model_version(name, champion)
            row["data_version"] = mv.tags.get("data_version")
            row["metrics"] = {
                k: v
                for k, v in version_metrics(name, champion).items()
                if k in ("auc_seen", "auc_unseen_min", "pixel_ap", "iou", "ece", "psnr_mask")
            }
        rows.append(row)
    return rows
