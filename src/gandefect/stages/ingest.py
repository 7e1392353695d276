"""Ingest stage: real images in, validated, versioned with DVC, tracked in MLflow."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from gandefect.config import Config
from gandefect.data import snapshot, sources
from gandefect.data.snapshot import IngestResult, Progress
from gandefect.errors import BadInputError, DataValidationError
from gandefect.lifecycle import tracking, validation, versioning
from gandefect.names import DATA_EXPERIMENT, INGEST_STAGE


@dataclass
class IngestSummary:
    result: IngestResult
    data_version: str
    validation: validation.ValidationReport
    report_path: Path
    quarantine_path: Path | None = None
    run_id: str | None = None
    remote: str | None = None
    notes: list[str] = field(default_factory=list)


def _write_quarantine(cfg: Config, result: IngestResult) -> Path | None:
    if not result.quarantined:
        return None
    path = cfg.report_dir / "ingest-quarantine.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "file", "reason"])
        for q in result.quarantined:
            writer.writerow([q.source, q.ref, q.reason])
    return path


def validate_snapshot(cfg: Config, progress: Progress | None = None) -> tuple[validation.ValidationReport, Path]:
    """Run the data suite on the snapshot on disk and write its report under reports/."""
    table = snapshot.image_table(cfg.real_dir, progress)
    report = validation.validate_table(cfg, table)
    md, _ = validation.write_report(report, cfg.report_dir, "data-validation", f"Data validation: {cfg.data.real_dir}")
    return report, md


def _same(a: sources.Source, b: dict) -> bool:
    return (a.kind, a.location) == (b["kind"], b["location"])


def sources_to_ingest(
    cfg: Config,
    named: list[str] | None = None,
    replace: bool = False,
    labels_from_subfolders: bool = False,
    exact: bool = False,
) -> list[sources.Source]:
    """The sources an ingest reads: those `named` (or `data.source`); with none named, the
    snapshot's own sources (refreshed: new files in a folder come in) or, on an empty snapshot,
    `data.default_source`. With `exact` (what `gandefect run` does), a snapshot holding sources
    other than the named ones stops the ingest with the reason: nothing is added on top of a
    user's snapshot, and nothing guessed."""
    d = cfg.data
    held = [] if replace else [r["source"] for r in snapshot.read_snapshot_info(cfg.real_dir).get("sources", [])]
    specs = list(named or ([d.source] if d.source else []))
    if not specs and held:  # a folder that is gone is not read again; its images stay
        return [sources.Source(**r) for r in held if r["kind"] in sources.BUILT_IN or Path(r["location"]).is_dir()]
    requested = [
        sources.resolve_source(spec, d.max_images, labels_from_subfolders) for spec in specs or [d.default_source]
    ]
    others = [r for r in held if not any(_same(s, r) for s in requested)]
    if exact and others:
        what = (
            "the sources you named (--from)"
            if named
            else f"data.source ({d.source})"
            if d.source
            else f"data.default_source ({d.default_source})"
        )
        holds = ", ".join(sources.Source(**r).name for r in others)
        raise BadInputError(
            f"{d.real_dir} holds images from {holds}, which {what} does not include. `gandefect run` ingests "
            "exactly the sources configured and never adds one on top of another: set data.source: null to "
            "keep the snapshot's own sources, name every source with --from, or start over from the named "
            "ones with --replace (the old snapshot stays in DVC's history)."
        )
    return requested


def run_ingest(
    cfg: Config,
    folders: list[str] | None = None,
    replace: bool = False,
    labels_from_subfolders: bool = False,
    version: bool = True,
    flow_run_id: str | None = None,
    progress: Progress | None = None,
    exact: bool = False,
) -> IngestSummary:
    """Ingest real images, validate the snapshot, version it with DVC and record an MLflow run.
    `folders`: the sources to add (else those of `sources_to_ingest`); `exact` (the flow): the
    snapshot must hold only the sources named.

    Raises DataValidationError (after writing and logging the report) when the suite fails;
    a failing snapshot is neither committed to DVC nor pushed.
    """
    requested = sources_to_ingest(cfg, folders, replace, labels_from_subfolders, exact=exact)
    result = snapshot.ingest(cfg, requested, replace=replace, progress=progress, enough_for_the_flow=True)
    quarantine = _write_quarantine(cfg, result)
    report, report_path = validate_snapshot(cfg, progress)

    data_version, remote = versioning.UNVERSIONED, None
    if version and cfg.versioning.enabled and report.success:
        data_version = versioning.version_stage(cfg, INGEST_STAGE, cfg.data.real_dir)
        remote = versioning.remote_url(cfg)

    mlflow = tracking.setup(cfg)
    with tracking.start_run(cfg, DATA_EXPERIMENT, "ingest", data_version, flow_run_id) as run:
        mlflow.log_params({"ingest.sources": ",".join(s.name for s in requested), "ingest.replace": replace})
        mlflow.log_metrics(
            {
                "n_images": result.total,
                "n_added": result.added,
                "n_duplicates": result.duplicates,
                "n_quarantined": len(result.quarantined),
                "validation_success": float(report.success),
                "validation_failed_expectations": len(report.failures),
                **{f"n_{split}": n for split, n in result.counts.items()},
            }
        )
        mlflow.set_tag("validation", "passed" if report.success else "failed")
        tracking.log_artifacts(
            [report_path, report_path.with_suffix(".json"), quarantine, cfg.real_dir / snapshot.SNAPSHOT], "data"
        )
    summary = IngestSummary(result, data_version, report, report_path, quarantine, run.info.run_id, remote)
    if not report.success:
        failed = ", ".join(f"{c.expectation}({c.column})" for c in report.failures)
        raise DataValidationError(
            f"snapshot failed the data suite: {failed}. Report: {report_path}. "
            "It was not versioned; fix the data (or `dvc checkout data/real` to restore the last "
            "valid version) and ingest again.",
            report_path,
        )
    return summary
