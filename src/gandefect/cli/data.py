"""The data commands: real images in (`ingest`, `data status`, `data validate`), fake sets
(`sample-fakes`, `ingest-fakes`) and the spliced benchmark (`build-spliced`)."""

from __future__ import annotations

import typer
from rich.table import Table

from gandefect.cli.common import app, data_app, out, progress_bars, project_config
from gandefect.errors import DataValidationError
from gandefect.names import BUILT_IN_SOURCES, INGEST_STAGE


@app.command()
def ingest(
    from_dirs: list[str] = typer.Option(
        None,
        "--from",
        metavar="SOURCE",
        help=f"Folder of images to add (any format, size, mode), or a built-in ({', '.join(BUILT_IN_SOURCES)}); repeatable. Default: data.source, else the snapshot's own sources, else data.default_source.",
    ),
    replace: bool = typer.Option(False, "--replace", help="Start a new snapshot instead of adding to the current one."),
    labels_from_subfolders: bool = typer.Option(
        False, "--labels-from-subfolders", help="Use each image's first subfolder under DIR as its class label."
    ),
    no_version: bool = typer.Option(False, "--no-version", help="Skip DVC commit/push (used by `dvc repro`)."),
) -> None:
    """Add real images to data/real, validate the snapshot, version it with DVC, log an MLflow run."""
    from gandefect.stages.ingest import run_ingest

    cfg = project_config()
    with progress_bars() as progress:
        summary = run_ingest(
            cfg,
            from_dirs,
            replace=replace,
            labels_from_subfolders=labels_from_subfolders,
            version=not no_version,
            progress=progress,
        )
    r = summary.result
    for name in r.skipped_sources:
        out.print(f"[dim]{name}: unchanged since it was ingested; skipped[/dim]")
    if r.replaced:
        out.print("replaced: the snapshot now holds only the sources named (the old one stays in DVC's history)")
    elif r.rebuilt:
        out.print("settings changed: the snapshot was rebuilt from its recorded sources")
    out.print(
        f"ingested: {r.added} new, {r.duplicates} duplicate(s) skipped, {len(r.quarantined)} quarantined; "
        f"snapshot has {r.total} images (train {r.counts.get('train', 0)}, val {r.counts.get('val', 0)}, "
        f"test {r.counts.get('test', 0)})"
    )
    if summary.quarantine_path:
        out.print(
            f"[yellow]quarantined {len(r.quarantined)} unreadable file(s), listed in {summary.quarantine_path}:[/yellow]"
        )
        for q in r.quarantined[:10]:
            out.print(f"  {q.source}/{q.ref}: {q.reason}")
    checks = summary.validation.checks
    out.print(
        f"validation: [green]passed[/green] ({len(checks)}/{len(checks)} expectations), report {summary.report_path}"
    )
    out.print(
        f"data version: [bold]{summary.data_version}[/bold]"
        + (f" (pushed to {summary.remote})" if summary.remote else "")
    )
    out.print(f"mlflow run: {summary.run_id}")


@app.command("ingest-fakes")
def ingest_fakes(
    folder: str = typer.Argument(..., metavar="DIR", help="Folder of generated images (any format, size, mode)."),
    generator: str = typer.Option(..., "--generator", help="Name of the generator family these images come from."),
) -> None:
    """Add externally generated images as another generator for the detectors."""
    from gandefect.stages.detectors import run_ingest_fakes

    cfg = project_config()
    fake_set, skipped, version = run_ingest_fakes(cfg, folder, generator)
    out.print(
        f"{fake_set.name}: {fake_set.count} images in {fake_set.path}"
        + (f"; {skipped} unreadable file(s) skipped" if skipped else "")
    )
    out.print(f"fakes version: [bold]{version}[/bold]")


@app.command("sample-fakes")
def sample_fakes(
    no_version: bool = typer.Option(False, "--no-version", help="Skip DVC commit/push (used by `dvc repro`)."),
) -> None:
    """Sample every registered generator (final and early) into data/fakes/<generator>/."""
    from gandefect.stages.detectors import run_sample_fakes

    cfg = project_config()
    if no_version:
        cfg = cfg.model_copy(update={"versioning": cfg.versioning.model_copy(update={"enabled": False})})
    with progress_bars() as progress:
        sets, version, _ = run_sample_fakes(cfg, progress)
    for s in sets:
        out.print(f"{s.name}: {s.count} images ({s.path})")
    out.print(f"fakes version: [bold]{version}[/bold]")


@app.command("build-spliced")
def build_spliced(
    no_version: bool = typer.Option(False, "--no-version", help="Skip DVC commit/push (used by `dvc repro`)."),
) -> None:
    """Build the spliced-defect benchmark: real val/test images with a generated region and its mask."""
    from gandefect.stages.localize import run_build_spliced

    manifest, version = run_build_spliced(project_config(), version=not no_version)
    counts = manifest["split"].value_counts()
    out.print(
        f"spliced benchmark: {counts.get('val', 0)} val, {counts.get('test', 0)} test images; "
        f"mask area {manifest['area'].min():.2f}-{manifest['area'].max():.2f}"
    )
    out.print(f"spliced version: [bold]{version}[/bold]")


@data_app.command("status")
def data_status() -> None:
    """Print the data version (DVC hash), image counts per split and whether the remote has it."""
    from gandefect.data.snapshot import read_manifest
    from gandefect.lifecycle import versioning

    cfg = project_config()
    manifest = read_manifest(cfg.real_dir)
    status = versioning.stage_status(cfg, INGEST_STAGE, cfg.data.real_dir)
    table = Table(title=f"{cfg.data.real_dir} (profile {cfg.profile})", show_header=False)
    table.add_row("data version", status.version or "none: run `gandefect ingest`")
    table.add_row(
        "workspace",
        "matches the version" if status.workspace_matches else "differs from the version (uncommitted changes)",
    )
    remote = {True: "has it", False: "does not have it: run `gandefect ingest` or `dvc push`", None: "unreachable"}[
        status.remote_has_it
    ]
    table.add_row(f"remote {cfg.versioning.remote_name}", f"{remote} ({versioning.remote_url(cfg)})")
    counts = manifest["split"].value_counts() if len(manifest) else {}
    for split in ("train", "val", "test"):
        table.add_row(split, str(int(counts.get(split, 0))))
    table.add_row("total", str(len(manifest)))
    out.print(table)


@data_app.command("validate")
def data_validate() -> None:
    """Run the Great Expectations data suite on the snapshot as it is on disk."""
    from gandefect.stages.ingest import validate_snapshot

    cfg = project_config()
    with progress_bars() as progress:
        report, path = validate_snapshot(cfg, progress)
    if not report.success:
        raise DataValidationError(_failure_text(report, path), path)
    out.print(
        f"validation: [green]passed[/green] ({len(report.checks)} expectations on {report.rows} images), report {path}"
    )


def _failure_text(report, path) -> str:
    lines = [f"the snapshot failed {len(report.failures)} of {len(report.checks)} expectations (report: {path}):"]
    for c in report.failures:
        ex = f"; e.g. {c.examples[:3]}" if c.examples else ""
        lines.append(f"  - {c.expectation} on {c.column}: {c.summary}{ex}")
    return "\n".join(lines)
