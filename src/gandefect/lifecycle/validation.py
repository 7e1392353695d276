"""Great Expectations data suite over the per-image table of a snapshot."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gandefect.config import Config

SUITE_NAME = "gandefect-data"
EXAMPLES = 5


@dataclass
class CheckResult:
    expectation: str
    column: str
    success: bool
    summary: str
    unexpected_count: int = 0
    examples: list = field(default_factory=list)


@dataclass
class ValidationReport:
    suite: str
    success: bool
    rows: int
    checks: list[CheckResult]

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def to_markdown(self, title: str) -> str:
        verdict = "PASSED" if self.success else "FAILED"
        lines = [
            f"# {title}",
            "",
            (
                f"Suite `{self.suite}` on {self.rows} images: **{verdict}** "
                f"({len(self.checks) - len(self.failures)}/{len(self.checks)} expectations met)."
            ),
            "",
            "| result | expectation | column | observed | failing rows | examples |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for c in sorted(self.checks, key=lambda c: c.success):
            ex = "; ".join(str(e) for e in c.examples) or "-"
            lines.append(
                f"| {'pass' if c.success else '**FAIL**'} | `{c.expectation}` | {c.column} | "
                f"{c.summary} | {c.unexpected_count} | {ex} |"
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {
            "suite": self.suite,
            "success": self.success,
            "rows": self.rows,
            "checks": [c.__dict__ for c in self.checks],
        }


def _with_derived_columns(table: pd.DataFrame) -> pd.DataFrame:
    t = table.copy()
    for split in ("train", "val", "test"):
        t[f"is_{split}"] = (t["split"] == split).astype(float)
    t["pixel_range"] = t["pixel_max"] - t["pixel_min"]
    t["hash_matches_manifest"] = t["sha256"] == t["manifest_sha256"]
    labelled = t["label"].notna()
    for label in sorted(t.loc[labelled, "label"].unique(), key=str):
        t[f"is_label_{label}"] = (t["label"] == label).astype(float).where(labelled)
    return t


def build_suite(cfg: Config, table: pd.DataFrame):
    """The data suite for this config; class-balance checks only for labels present."""
    import great_expectations as gx  # lazy: importing Great Expectations takes seconds, and only a gate needs it

    E = gx.expectations
    d, v = cfg.data, cfg.validation
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    add = suite.add_expectation
    add(E.ExpectTableRowCountToBeBetween(min_value=v.min_images))
    add(E.ExpectColumnValuesToBeInSet(column="readable", value_set=[True]))
    add(E.ExpectColumnValuesToBeInSet(column="width", value_set=[d.image_size]))
    add(E.ExpectColumnValuesToBeInSet(column="height", value_set=[d.image_size]))
    add(E.ExpectColumnValuesToBeInSet(column="mode", value_set=[d.mode]))
    add(E.ExpectColumnValuesToBeInSet(column="dtype", value_set=["uint8"]))
    add(E.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=255))
    add(E.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=255))
    add(E.ExpectColumnValuesToBeInSet(column="hash_matches_manifest", value_set=[True]))
    add(E.ExpectColumnValuesToBeUnique(column="path"))
    add(E.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "val", "test"]))
    # An exact duplicate in two splits leaks test data into training.
    add(E.ExpectColumnValuesToBeBetween(column="splits_with_same_pixels", max_value=1))
    # A constant image carries no signal and usually means a broken export.
    add(E.ExpectColumnValuesToBeBetween(column="pixel_range", min_value=1))
    for split, fraction in d.splits.items():
        # splits follow content hashes: on a few hundred images their shares vary by chance, so the
        # band is at least three binomial standard deviations wide (a broken split is far outside)
        band = max(v.split_tolerance, 3 * math.sqrt(fraction * (1 - fraction) / max(1, len(table))))
        add(
            E.ExpectColumnMeanToBeBetween(
                column=f"is_{split}", min_value=max(0.0, fraction - band), max_value=min(1.0, fraction + band)
            )
        )
    label_cols = [c for c in table.columns if c.startswith("is_label_")]
    if label_cols:
        # one class is no class: a capped or filtered export that kept a single label
        add(E.ExpectColumnUniqueValueCountToBeBetween(column="label", min_value=2))
        share = 1.0 / len(label_cols)
        tol = v.class_balance_tolerance
        for col in label_cols:
            add(
                E.ExpectColumnMeanToBeBetween(
                    column=col, min_value=share * (1 - tol), max_value=min(1.0, share * (1 + tol))
                )
            )
    return suite


def _summarize(result) -> CheckResult:
    cfg = result.expectation_config
    kwargs = cfg.kwargs
    column = kwargs.get("column", "(table)")
    r = result.result or {}
    bounds = {
        k: (round(kwargs[k], 4) if isinstance(kwargs[k], float) else kwargs[k])
        for k in ("value_set", "min_value", "max_value")
        if kwargs.get(k) is not None
    }
    if "observed_value" in r:
        observed = r["observed_value"]
        observed = round(float(observed), 4) if isinstance(observed, float) or hasattr(observed, "dtype") else observed
        summary = f"{observed} (expected {bounds})"
    else:
        summary = f"{r.get('unexpected_count', 0)} of {r.get('element_count', 0)} rows outside {bounds}"
    examples = []
    for item in (r.get("unexpected_index_list") or [])[:EXAMPLES]:
        examples.append({k: (v.item() if hasattr(v, "item") else v) for k, v in item.items()})
    if not examples and r.get("partial_unexpected_list"):
        examples = [v.item() if hasattr(v, "item") else v for v in r["partial_unexpected_list"][:EXAMPLES]]
    return CheckResult(cfg.type, column, bool(result.success), summary, int(r.get("unexpected_count") or 0), examples)


def validate_table(cfg: Config, table: pd.DataFrame) -> ValidationReport:
    """Run the data suite with a real (ephemeral) Great Expectations context."""
    import great_expectations as gx  # lazy: importing Great Expectations takes seconds, and only a gate needs it

    if table.empty:
        return ValidationReport(
            SUITE_NAME,
            False,
            0,
            [CheckResult("expect_table_row_count_to_be_between", "(table)", False, "snapshot has no images")],
        )
    table = _with_derived_columns(table)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    asset = context.data_sources.add_pandas("snapshot").add_dataframe_asset("images")
    batch_definition = asset.add_batch_definition_whole_dataframe("all-images")
    suite = context.suites.add(build_suite(cfg, table))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="data-gate", data=batch_definition, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": table},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["path"]},
    )
    checks = [_summarize(r) for r in result.results]
    return ValidationReport(SUITE_NAME, bool(result.success), len(table), checks)


def write_report(report: ValidationReport, report_dir: Path, name: str, title: str) -> tuple[Path, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    md, js = report_dir / f"{name}.md", report_dir / f"{name}.json"
    md.write_text(report.to_markdown(title))
    js.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    return md, js
