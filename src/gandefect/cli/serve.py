"""The serving and use commands: the bento of the champions, the HTTP service, and `repair` /
`generate` on the command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import typer
from rich.table import Table

from gandefect.cli.common import app, out, project_config


@app.command("build-bento")
def build_bento_cmd(
    force: bool = typer.Option(False, "--force", help="Build even if a bento of the same champions exists."),
) -> None:
    """Package the champion detector and repairer as a bento (weights, thresholds, metadata; no MLflow needed to serve)."""
    from gandefect.lifecycle import bento

    built = bento.build(project_config(), force)
    out.print(f"bento {built.tag} ({'reused: same champions' if built.reused else 'built'}) at {built.path}")
    out.print(f"models: {', '.join(built.models.values())}")
    for role, why in built.unavailable.items():
        out.print(f"[yellow]not served: {role}: {why} (its API answers 503 with this reason)[/yellow]")
    out.print(f"serve it: bentoml serve {built.tag}   (or: gandefect serve)")


@app.command("serve")
def serve_cmd(
    port: int | None = typer.Option(None, "--port", help="HTTP port (default: serve.port in params.yaml, 3000)."),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Build a new bento even if one of the same champions exists."
    ),
) -> None:
    """Serve the champions over HTTP (BentoML): the web page at /, the APIs, /docs and /readyz.

    Builds the bento first when the champions changed since the last build."""
    from gandefect.lifecycle import bento

    cfg = project_config()
    built = bento.build(cfg, rebuild)
    port = port or cfg.serve.port
    out.print(f"serving {built.tag} on http://localhost:{port}/  (ready when /readyz answers 200; Ctrl-C stops)")
    command = bento.serve_command(built.tag, port)
    try:
        code = subprocess.call(command, env={**os.environ, "BENTOML_DO_NOT_TRACK": "true"})
    except KeyboardInterrupt:
        code = 0
    if code:
        raise typer.Exit(code)


@app.command("repair")
def repair_cmd(
    images: list[Path] = typer.Argument(..., help="Image files (any format and size; converted as at ingest)."),
    mask: Path | None = typer.Option(
        None,
        "--mask",
        help="Mask image (white = rewrite), same size as the model input; skips detection and inpaints exactly there.",
    ),
    out_dir: Path = typer.Option(
        Path("repaired"), "--out", help="Folder for <name>.png, <name>.mask.png and repair.csv."
    ),
    iterations: int | None = typer.Option(
        None, "--iterations", min=1, help="Most detect -> mask -> inpaint passes (default: params)."
    ),
) -> None:
    """Detect, mask, inpaint and re-score images with the registered detector and repairer."""
    from gandefect.stages.apply import run_repair

    table, folder = run_repair(
        project_config(), [str(p) for p in images], str(mask) if mask else None, str(out_dir), iterations
    )
    _print_rows(table, f"repaired into {folder}")


@app.command("generate")
def generate_cmd(
    generator: str = typer.Option(..., "--generator", help="Loss of a registered generator, e.g. hinge."),
    n: int = typer.Option(16, "--n", min=1, help="Number of images."),
    clean: bool = typer.Option(False, "--clean", help="Repair every sample with the detector and repairer."),
    reject: bool = typer.Option(
        False, "--reject", help="Draw repair.reject_factor x n and keep the n least suspicious."
    ),
    out_dir: Path = typer.Option(Path("generated"), "--out", help="Output folder."),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed (default: params seed)."),
) -> None:
    """Sample a registered generator, optionally cleaned by the repair pipeline."""
    from gandefect.stages.apply import run_generate

    table, folder = run_generate(project_config(), generator, n, clean, reject, str(out_dir), seed)
    if clean:
        _print_rows(table, f"{n} cleaned samples in {folder}")
        out.print(f"mean p_fake {table['score_before'].mean():.3f} -> {table['score_after'].mean():.3f}")
    else:
        out.print(f"{n} samples in {folder}")


def _print_rows(table, title: str) -> None:
    shown = Table(title=title)
    for c in ["image", "score_before", "score_after", "mask_area", "iterations", "stopped"]:
        shown.add_column(c, justify="left" if c in ("image", "stopped") else "right")
    for _, row in table.head(20).iterrows():
        shown.add_row(
            str(row["image"]),
            f"{row['score_before']:.3f}",
            f"{row['score_after']:.3f}",
            f"{row['mask_area']:.3f}",
            str(row["iterations"]),
            row["stopped"],
        )
    out.print(shown)
    if len(table) > 20:
        out.print(f"... {len(table) - 20} more rows in the CSV")
