"""The training and evaluation commands, one stage each: the GAN zoo, the detectors, the
repairer, and their evaluations."""

from __future__ import annotations

import math

import typer
from rich.table import Table

from gandefect.cli.common import app, out, print_gate, progress_bars, project_config
from gandefect.names import DETECTOR_MODEL


@app.command("train-gans")
def train_gans(
    loss: list[str] = typer.Option(
        None,
        "--loss",
        metavar="L",
        help="Train only this zoo member (repeatable): an adversarial loss of gan.losses "
        "or a family of gan.families in params.yaml (a name it does not know is "
        "refused with the list).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue each GAN from its last checkpoint (and MLflow run)."),
) -> None:
    """Train the GAN zoo: one tracked MLflow run and registered generator per adversarial loss and per other family."""
    from gandefect.stages.gans import run_train_gans

    cfg = project_config()
    with progress_bars() as progress:
        summary = run_train_gans(cfg, loss, resume=resume, progress=progress)
    kind = "test" if summary.feature_space == "labelled" else "nearest-neighbour label"
    quality = f", {kind} accuracy {summary.feature_accuracy:.4f}" if math.isfinite(summary.feature_accuracy) else ""
    out.print(f"feature space {summary.feature_space}{quality}; untrained generator FID {summary.baseline['fid']:.1f}")
    table = Table(title=f"GAN zoo (data {summary.data_version}, {summary.seconds:.0f} s)")
    for col in summary.table.columns:
        table.add_column(col, justify="left" if col == "loss" else "right")
    for row in summary.table.itertuples(index=False):
        table.add_row(*[v if isinstance(v, str) else (f"{v:.0f}" if abs(v) >= 100 else f"{v:.3f}") for v in row])
    out.print(table)
    out.print(f"report {summary.report}; mlflow run {summary.run_id}")


@app.command("train-detectors")
def train_detectors(
    no_sample: bool = typer.Option(
        False, "--no-sample", help="Use data/fakes as it is instead of re-sampling the generators."
    ),
    no_gate: bool = typer.Option(False, "--no-gate", help="Register the winner without judging it by the model gate."),
    without: list[str] | None = typer.Option(
        None,
        "--without",
        help="Train without this generator family's samples (it stays in the evaluation): what a model that never saw it does. Repeatable.",
    ),
) -> None:
    """Train the CNN and spectral detectors, evaluate them leave-one-family-out, register the winner
    and judge it beside the champion on the same data."""
    from gandefect.stages.detectors import run_train_detectors

    cfg = project_config()
    with progress_bars() as progress:
        summary = run_train_detectors(
            cfg, sample=not no_sample, progress=progress, gate=not no_gate, without=without or []
        )
    keys = [
        "auc_seen",
        "ap_seen",
        "auc_unseen_min",
        "auc_unseen_mean",
        "auc_jpeg90",
        "auc_jpeg75",
        "auc_jpeg50",
        "auc_blur0.5",
        "auc_blur1.0",
        "auc_resize",
        "ece",
        "acc_real",
        "acc_fake",
        "pixel_ap",
        "iou",
        "images_per_second",
    ]
    table = Table(title=f"detectors (fakes {summary.fakes_version})")
    table.add_column("metric")
    for family in summary.results:
        table.add_column(family + (" (winner)" if family == summary.winner else ""), justify="right")
    for key in keys:
        table.add_row(
            key,
            *[
                f"{r.metrics.get(key, float('nan')):.4f}" if key != "images_per_second" else f"{r.metrics[key]:.0f}"
                for r in summary.results.values()
            ],
        )
    out.print(table)
    out.print(
        f"registered gandefect-detector v{summary.detector_version} ({summary.winner})"
        + (f", gandefect-judge v{summary.judge_version}" if summary.judge_version else "")
    )
    out.print(f"report {summary.report}")
    print_gate(summary.gate)


@app.command("evaluate-detector")
def evaluate_detector(
    model: str | None = typer.Option(None, "--model", help="Model URI (default: latest gandefect-detector)."),
) -> None:
    """Evaluate a detector on the current test split and fake sets."""
    from gandefect.stages.detectors import run_evaluate_detector

    uri, metrics = run_evaluate_detector(project_config(), model)
    table = Table(title=uri, show_header=False)
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}")
    out.print(table)


@app.command("evaluate-localization")
def evaluate_localization_cmd(
    model: str | None = typer.Option(None, "--model", help="Detector URI (default: latest gandefect-detector)."),
) -> None:
    """Pixel AP and IoU of a detector's defect maps on the spliced benchmark."""
    from gandefect.lifecycle import tracking
    from gandefect.lifecycle.registry import latest_uri, load_detector
    from gandefect.stages.localize import evaluate_localization

    cfg = project_config()
    tracking.setup(cfg)
    uri = model or latest_uri(DETECTOR_MODEL, "train-detectors")
    metrics = evaluate_localization(cfg, load_detector(uri))
    table = Table(title=f"localization: {uri}", show_header=False)
    for key, value in metrics.items():
        table.add_row(key, f"missing: {metrics.missing[key]}" if key in metrics.missing else f"{value:.4f}")
    out.print(table)


@app.command("train-repairer")
def train_repairer_cmd(
    no_evaluate: bool = typer.Option(
        False, "--no-evaluate", help="Skip the repair evaluation (and so the gate) after training."
    ),
    no_gate: bool = typer.Option(
        False, "--no-gate", help="Register the repairer without judging it by the model gate."
    ),
) -> None:
    """Train the inpainting repairer on real images, register gandefect-repairer, evaluate and gate it."""
    from gandefect.stages.repair import run_train_repairer

    with progress_bars() as progress:
        summary = run_train_repairer(project_config(), evaluate=not no_evaluate, progress=progress, gate=not no_gate)
    out.print(f"registered gandefect-repairer v{summary.version} (trained in {summary.train_seconds:.0f} s)")
    if summary.evaluation:
        _print_repair_evaluation(summary.evaluation)
    print_gate(summary.gate)


@app.command("evaluate-repair")
def evaluate_repair_cmd(
    model: str | None = typer.Option(None, "--model", help="Repairer URI (default: latest gandefect-repairer)."),
) -> None:
    """Repair samples of every generator and the spliced benchmark; FID, judge and PSNR before/after."""
    from gandefect.lifecycle.served import load_repairer
    from gandefect.stages.repair import run_evaluate_repair

    cfg = project_config()
    with progress_bars() as progress:
        evaluation = run_evaluate_repair(cfg, load_repairer(cfg, model), progress=progress)
    _print_repair_evaluation(evaluation)


def _print_repair_evaluation(evaluation) -> None:
    table = Table(title="repair per generator")
    cols = [
        "fid_before",
        "fid_after",
        "fid_ratio",
        "judge_pfake_before",
        "judge_pfake_after",
        "judge_ratio",
        "judge_excess_changed",
        "changed",
        "refused",
        "mask_area",
        "iterations",
        "outside_mask_change",
    ]
    table.add_column("generator")
    for c in cols:
        table.add_column(c, justify="right")
    for name, row in evaluation.table.iterrows():
        table.add_row(name, *[f"{row[c]:.3f}" if c not in ("outside_mask_change",) else f"{row[c]:.0f}" for c in cols])
    out.print(table)
    m = evaluation.metrics
    if "psnr_mask" in m.missing:
        out.print(f"psnr_mask on spliced test: missing ({m.missing['psnr_mask']})")
    else:
        out.print(
            f"psnr_mask on spliced test: repairer {m['psnr_mask']:.2f} dB, mean fill {m['psnr_mask_mean_fill']:.2f} dB, "
            f"biharmonic {m['psnr_mask_biharmonic']:.2f} dB"
        )
    out.print(f"report {evaluation.report}")
