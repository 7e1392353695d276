"""Repairer stage: train the inpainting U-Net, register it, and the repair evaluation of
docs/architecture.md, "Repair" (FID and judge before/after, outside-mask change, in-mask PSNR) that gates it."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from gandefect import faults, hardware
from gandefect.config import Config
from gandefect.data.datasets import load_pngs, load_split, to_tensor, to_uint8
from gandefect.data.snapshot import Progress, read_manifest
from gandefect.data.spliced import load_spliced
from gandefect.errors import BadInputError
from gandefect.evaluate import plots
from gandefect.evaluate.features import FeatureExtractor
from gandefect.evaluate.figures import Figures
from gandefect.evaluate.generators import fid
from gandefect.evaluate.repair import biharmonic, mean_fill, outside_change, psnr_in_mask
from gandefect.lifecycle import gates, registry, tracking, versioning
from gandefect.lifecycle.served import load_repairer, load_served_detector
from gandefect.lifecycle.zoo import ensure_feature_net, registered_generators, sample_generator
from gandefect.names import JUDGE_MODEL, REPAIRER_EXPERIMENT, REPAIRER_MODEL, STAGE_KEY, generator_model
from gandefect.repair.model import UNetShape
from gandefect.repair.pipeline import Repairer, RepairResult, pull_push, repair
from gandefect.repair.prior import PriorInpainter
from gandefect.repair.train import train_repairer


def _channels(cfg: Config) -> int:
    return 1 if cfg.data.mode == "L" else 3


def load_real(cfg: Config, split: str) -> np.ndarray:
    manifest = read_manifest(cfg.real_dir)
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise BadInputError(f"no {split} images in {cfg.real_dir}: run `gandefect ingest` first")
    return load_pngs(rows["path"], cfg.real_dir, cfg.data.shape)


# -- training ----------------------------------------------------------------------------
@dataclass
class RepairSummary:
    run_id: str
    version: str
    train_seconds: float
    evaluation: RepairEvaluation | None = None
    gate: object | None = None  # gandefect.lifecycle.gates.GateResult of the new repairer
    resumed: bool = False  # registered by an interrupted run with the same inputs, gated now


def run_train_repairer(
    cfg: Config,
    evaluate: bool = True,
    flow_run_id: str | None = None,
    progress: Progress | None = None,
    gate: bool = True,
    stage_key: str | None = None,
    resume: bool = True,
) -> RepairSummary:
    """Train on real train images with random masks, register gandefect-repairer, then evaluate
    and gate it (the gate needs the evaluation's metrics).

    `stage_key` (the flow's cache key): the registered version carries it, and a version a
    killed flow registered under the same key is evaluated (if it was not) and gated instead
    of trained again (unless `resume` is off: `gandefect run --force`)."""
    device = hardware.setup(cfg.device, cfg.deterministic, cfg.threads)
    tracking.setup(cfg)
    found = registry.latest_version_with_tag(REPAIRER_MODEL, STAGE_KEY, stage_key) if stage_key and resume else None
    if found is not None:
        net = registry.load_torch_model(f"models:/{REPAIRER_MODEL}/{found.version}")
        seconds = mlflow.MlflowClient().get_run(found.run_id).data.metrics.get("train_seconds", 0.0)
        summary = RepairSummary(found.run_id, found.version, seconds, resumed=True)
        with mlflow.start_run(run_id=found.run_id, nested=mlflow.active_run() is not None):  # its record, completed
            if evaluate:
                _evaluate_into_run(cfg, summary, net, progress)
    else:
        r = cfg.repair
        images = load_real(cfg, "train")
        version = versioning.data_version(cfg)
        model_cfg = UNetShape(channels=_channels(cfg), width=r.width)
        with tracking.start_run(cfg, REPAIRER_EXPERIMENT, "repairer", version, flow_run_id) as run:
            client = mlflow.MlflowClient()

            def on_epoch(epoch: int, losses: dict[str, float]) -> None:
                client.log_batch(
                    run.info.run_id,
                    metrics=[mlflow.entities.Metric(k, v, int(time.time() * 1000), epoch) for k, v in losses.items()],
                )

            on_step = (lambda done, total: progress("repairer", done, total)) if progress else None
            started = time.perf_counter()
            net = train_repairer(images, model_cfg, r, cfg.seed, on_epoch, on_step, device)
            seconds = time.perf_counter() - started
            mlflow.log_metric("train_seconds", seconds)
            net, prior = with_prior(cfg, net)
            mlflow.set_tag("prior", prior)
            example = torch.cat([to_tensor(images[:2]), torch.zeros(2, 1, *images.shape[1:3])], 1)
            example[:, -1, 4:12, 4:12] = 1.0
            tags = {"data_version": version, "run_id": run.info.run_id, **({STAGE_KEY: stage_key} if stage_key else {})}
            _, mv = registry.log_torch_model(net, "repairer", example, REPAIRER_MODEL, tags)
            faults.reached("repairer:registered")
            summary = RepairSummary(run.info.run_id, mv.version, seconds)
            if evaluate:
                _evaluate_into_run(cfg, summary, net, progress)
    if evaluate and gate:
        champion = gates.alias_version(REPAIRER_MODEL, gates.CHAMPION)
        champion_today = None
        if champion and champion != str(summary.version):  # judged on the same samples, with the same served detector
            champion_repairer = load_repairer(cfg, f"models:/{REPAIRER_MODEL}/{champion}")
            champion_today = run_evaluate_repair(cfg, champion_repairer, write_report=False).metrics
        summary.gate = gates.apply_gate(
            cfg, gates.gate(cfg, REPAIRER_MODEL, summary.version, champion_today=champion_today)
        )
    return summary


def with_prior(cfg: Config, unet: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The served inpainting net: the U-Net, refined by the zoo member `repair.prior` when that
    member is registered and has a denoising model (gandefect.repair.prior); and what it is."""
    r = cfg.repair
    if not r.prior:
        return unet, "none"
    found = registry.latest_version(generator_model(r.prior))
    if found is None:
        return unet, f"none: no registered {generator_model(r.prior)}"
    ddpm = registry.load_torch_model(f"models:/{generator_model(r.prior)}/{found.version}")
    if not hasattr(ddpm, "alpha_bar"):
        raise BadInputError(f"repair.prior {r.prior!r} is not a diffusion model (DDPM); use ddpm or null")
    return (
        PriorInpainter(
            ddpm.cpu().eval(), unet.cpu().eval(), r.prior_steps, r.prior_strength, r.prior_resample, cfg.seed
        ),
        f"{r.prior} v{found.version}",
    )


def _evaluate_into_run(cfg: Config, summary: RepairSummary, net, progress: Progress | None) -> None:
    """Evaluate a registered repairer and record the figures on the active run and its version."""
    summary.evaluation = run_evaluate_repair(cfg, Repairer(net, hardware.resolve(cfg.device)), progress=progress)
    mlflow.log_metrics(summary.evaluation.metrics.finite())
    mlflow.set_tags(summary.evaluation.metrics.missing_tags())  # what the data could not support, and why
    mlflow.log_dict(summary.evaluation.table.to_dict(orient="index"), "evaluation/per_generator.json")
    tracking.log_artifacts([summary.evaluation.report, *summary.evaluation.figures], "report")
    mlflow.MlflowClient().set_model_version_tag(
        REPAIRER_MODEL, summary.version, "psnr_mask", f"{summary.evaluation.metrics['psnr_mask']:.3f}"
    )


def gate_figures(cfg: Config, version: str) -> tuple[Figures, Figures | None]:
    """Repairer version `version` and the champion, both evaluated on today's samples with the
    served detector, for a gate run on its own (`gandefect gate --model gandefect-repairer`)."""
    tracking.setup(cfg)
    candidate = run_evaluate_repair(
        cfg, load_repairer(cfg, f"models:/{REPAIRER_MODEL}/{version}"), write_report=False
    ).metrics
    champion = gates.alias_version(REPAIRER_MODEL, gates.CHAMPION)
    if champion is None or champion == str(version):
        return candidate, None
    return candidate, run_evaluate_repair(
        cfg, load_repairer(cfg, f"models:/{REPAIRER_MODEL}/{champion}"), write_report=False
    ).metrics


# -- evaluation ------------------------------------------------------------------------------------
@dataclass
class RepairEvaluation:
    metrics: Figures
    table: pd.DataFrame
    report: Path | None  # None when written without a report
    figures: list[Path] = field(default_factory=list)


SPLICED_FIGURES = (
    "psnr_mask",
    "psnr_mask_mean_fill",
    "psnr_mask_biharmonic",
    "psnr_mask_pull_push",
    "psnr_mask_spliced_input",
    "spliced_outside_mask_change",
    "psnr_gain",
)


def _spliced_psnr(cfg: Config, repairer: Repairer) -> tuple[Figures, list[tuple[str, list[np.ndarray]]]]:
    images, masks, manifest = load_spliced(cfg, "test")
    figures = Figures(min_samples=cfg.gates.min_samples)
    if not figures.enough("psnr_mask", {"spliced test images": len(images)}):
        for key in SPLICED_FIGURES:
            figures.lack(key, figures.missing["psnr_mask"])
        return figures, []
    real = read_manifest(cfg.real_dir).set_index("sha256")
    original = load_pngs(real.loc[manifest["real_sha256"], "path"], cfg.real_dir, cfg.data.shape)
    repaired = repairer.inpaint(images, masks)
    filled, classical = mean_fill(images, masks), biharmonic(images, masks)
    figures.update(
        {
            "psnr_mask": psnr_in_mask(repaired, original, masks),
            "psnr_mask_mean_fill": psnr_in_mask(filled, original, masks),
            "psnr_mask_biharmonic": psnr_in_mask(classical, original, masks),
            "psnr_mask_pull_push": psnr_in_mask(pull_push(images, masks), original, masks),
            "psnr_mask_spliced_input": psnr_in_mask(images, original, masks),
            "spliced_outside_mask_change": float(outside_change(images, repaired, masks)),
        }
    )
    # what the learned repairer adds over the better of the two classical fills (dB; the gate's floor)
    figures["psnr_gain"] = figures["psnr_mask"] - max(figures["psnr_mask_mean_fill"], figures["psnr_mask_biharmonic"])
    rows = [
        (f"spliced {i}", [images[i], masks[i].astype(np.float32), filled[i], classical[i], repaired[i], original[i]])
        for i in range(min(6, len(images)))
    ]
    return figures, rows


def run_evaluate_repair(
    cfg: Config,
    repairer: Repairer | None = None,
    detector_uri: str | None = None,
    progress: Progress | None = None,
    write_report: bool = True,
) -> RepairEvaluation:
    """Per final generator: FID and judge p_fake before/after repair, change outside the masks;
    on the spliced benchmark: in-mask PSNR against the mean-fill and biharmonic baselines.
    `write_report=False`: the figures only (a champion judged beside a candidate)."""
    repairer = repairer or load_repairer(cfg)
    detector = load_served_detector(cfg, detector_uri)
    device = hardware.resolve(cfg.device)
    judge = registry.load_detector(registry.latest_uri(JUDGE_MODEL, "train-detectors"), device)
    train, test = load_split(cfg.real_dir, "train"), load_split(cfg.real_dir, "test")
    net, _ = ensure_feature_net(cfg, train, test, versioning.data_version(cfg))
    extractor = FeatureExtractor(net).to(device)
    j_real = judge.score(to_uint8(test.images))
    r = cfg.repair
    rows, grid = {}, []
    generators = sorted(g for g in registered_generators(cfg) if "-epoch" not in g)
    for i, loss in enumerate(generators, start=1):
        images = sample_generator(cfg, loss, r.eval_samples, cfg.seed + 29)
        res: RepairResult = repair(
            images, detector, repairer, r.iterations, r.max_area, cfg.spliced.dilate, local_area=r.local_max_area
        )
        rows[loss] = _generator_row(images, res, judge, j_real, extractor, test.images)
        grid += [
            (
                f"{loss} p {res.score_before[k]:.2f}>{res.score_after[k]:.2f}",
                [images[k], res.first_maps[k].astype(np.float32), res.masks[k].astype(np.float32), res.images[k]],
            )
            for k in range(2)
        ]
        if progress:
            progress("repair evaluation", i, len(generators) + 1)
    table = pd.DataFrame(rows).T
    table["fid_ratio"] = table["fid_after"] / table["fid_before"]
    table["judge_ratio"] = table["judge_pfake_after"] / table["judge_pfake_before"].clip(lower=1e-12)
    spliced, spliced_rows = _spliced_psnr(cfg, repairer)
    if progress:
        progress("repair evaluation", len(generators) + 1, len(generators) + 1)
    metrics = _summary(spliced, table, j_real, judge.threshold, r.applies_at)
    if not write_report:
        return RepairEvaluation(metrics, table, None, [])
    out = cfg.report_dir / "repair"
    out.mkdir(parents=True, exist_ok=True)
    figures = _grids(grid, spliced_rows, out)
    report = _write_report(cfg, table, metrics, figures, out)
    return RepairEvaluation(metrics, table, report, figures)


def _generator_row(images, res: RepairResult, judge, j_real, extractor, real_test) -> dict[str, float]:
    """One generator's samples before and after the repair loop: FID, the judge's and the
    detector's p_fake, what the loop changed or refused, and the change outside its masks."""
    j_before, j_after = judge.score(images), judge.score(res.images)
    changed = res.iterations > 0
    return {
        "fid_before": fid(extractor, real_test, to_tensor(images)),
        "fid_after": fid(extractor, real_test, to_tensor(res.images)),
        "judge_pfake_before": float(j_before.mean()),
        "judge_pfake_after": float(j_after.mean()),
        "judge_flagged_before": float((j_before >= judge.threshold).mean()),
        "judge_flagged_after": float((j_after >= judge.threshold).mean()),
        "detector_pfake_before": float(res.score_before.mean()),
        "detector_pfake_after": float(res.score_after.mean()),
        # the judge on the images the loop rewrote: what a user who keeps a repair sees
        "judge_ratio_changed": float(j_after[changed].mean() / max(j_before[changed].mean(), 1e-12))
        if changed.any()
        else float("nan"),
        # ... as the share of its suspicion above real images' that is left: 0 is a repair the judge finds as
        # real as the real test images (its p_fake on real images is far from 0, so the ratio above cannot reach 0)
        "judge_excess_changed": float(
            (j_after[changed].mean() - j_real.mean()) / max(j_before[changed].mean() - j_real.mean(), 1e-12)
        )
        if changed.any()
        else float("nan"),
        "changed": float(changed.mean()),
        "refused": float(np.mean([s == "whole-image" for s in res.stopped])),
        "mask_area": float(res.masks.mean()),
        "iterations": float(res.iterations.mean()),
        "outside_mask_change": float(outside_change(images, res.images, res.masks)),
    }


# the per-generator figures the evaluation also records as `<figure>_<generator>`
PER_GENERATOR = (
    "fid_before",
    "fid_after",
    "fid_ratio",
    "judge_pfake_before",
    "judge_pfake_after",
    "changed",
    "refused",
)


def _summary(spliced: Figures, table: pd.DataFrame, j_real, judge_threshold: float, applies_at: float) -> Figures:
    """The evaluation's figures: the spliced benchmark's, the worst generator's, and each generator's."""
    repaired = table[table["changed"] >= applies_at]  # the generators the repair applies to
    metrics = spliced
    metrics.update(
        {
            "outside_mask_change": float(table["outside_mask_change"].max()),
            "worst_fid_ratio": float(table["fid_ratio"].max()),
            "worst_judge_ratio": float(table["judge_ratio"].max()),
            "worst_judge_ratio_changed": float(table["judge_ratio_changed"].max()),  # NaN where nothing was changed
            "worst_judge_excess_changed": float(table["judge_excess_changed"].max()),
            "changed": float(table["changed"].mean()),
            "refused": float(table["refused"].mean()),
            "judge_pfake_real_test": float(j_real.mean()),
            "judge_flagged_real_test": float((j_real >= judge_threshold).mean()),
            **{f"{k}_{loss}": float(v) for loss, row in table.iterrows() for k, v in row.items() if k in PER_GENERATOR},
            "repaired_generators": float(len(repaired)),
            **{f"repaired_fid_ratio_{loss}": float(v) for loss, v in repaired["fid_ratio"].items()},
        }
    )
    for key in ("worst_judge_ratio_changed", "worst_judge_excess_changed"):
        if not math.isfinite(metrics[key]):
            metrics.lack(key, "the repair loop changed no sample")
    return metrics


def _grids(grid: list, spliced_rows: list, out: Path) -> list[Path]:
    """The picture grids of the report: generated samples through the loop, spliced images repaired."""
    figures = [
        plots.panel_grid(
            grid,
            ["input", "defect map", "mask", "repaired"],
            out / "repair-grid.png",
            "generated samples: input | defect map | mask (all passes) | repaired",
        )
    ]
    if spliced_rows:
        figures.append(
            plots.panel_grid(
                spliced_rows,
                ["spliced", "true mask", "mean fill", "biharmonic", "repairer", "original"],
                out / "spliced-grid.png",
                "spliced test images repaired inside the true mask",
            )
        )
    return figures


def _applies(table: pd.DataFrame, at: float) -> str:
    names = [f"{g} (FID ratio {v:.2f})" for g, v in table.loc[table["changed"] >= at, "fid_ratio"].items()]
    return f"the generators whose samples the loop changed at least {at:.0%} of: {', '.join(names) or 'none'}"


def _write_report(cfg: Config, table: pd.DataFrame, metrics: Figures, figures: list[Path], out: Path) -> Path:
    def shown(key: str, fmt: str = ".2f") -> str:
        return f"missing ({metrics.missing[key]})" if key in metrics.missing else format(metrics[key], fmt)

    table.to_csv(out / "repair.csv", lineterminator="\n")
    (out / "repair.json").write_text(json.dumps({**metrics.finite(), "missing": metrics.missing}, indent=2) + "\n")
    cols = [
        "fid_before",
        "fid_after",
        "fid_ratio",
        "judge_pfake_before",
        "judge_pfake_after",
        "judge_ratio",
        "judge_flagged_before",
        "judge_flagged_after",
        "detector_pfake_before",
        "detector_pfake_after",
        "judge_ratio_changed",
        "judge_excess_changed",
        "changed",
        "refused",
        "mask_area",
        "iterations",
        "outside_mask_change",
    ]
    lines = [
        "# Repair",
        "",
        (
            f"{cfg.repair.eval_samples} samples per generator, repaired by detect -> mask -> inpaint "
            f"(at most {cfg.repair.iterations} passes, at most {cfg.repair.max_area:.0%} of the image per pass); "
            f"`changed`: the share the loop rewrote; `refused`: the share whose defect mask covered more than "
            f"{cfg.repair.local_max_area:.0%} of the image, left unchanged as generated as a whole. "
            f"The repair applies to {_applies(table, cfg.repair.applies_at)}. "
            "The judge is gandefect-judge, a detector the repair loop never used; on real test images its mean "
            f"p_fake is {metrics['judge_pfake_real_test']:.3f} and it flags {metrics['judge_flagged_real_test']:.1%}, so "
            "`judge_ratio_changed` (its mean p_fake after over before, on the changed samples) stays well above 0 even for "
            "a repair it finds as real as real images; `judge_excess_changed` is the share of its p_fake above the real "
            "images' mean that the repair leaves (0: as real as the real test images)."
        ),
        "",
        table[cols].to_markdown(floatfmt=".3f"),
        "",
        "## In-mask PSNR on the spliced test images (dB, pooled over all masked pixels)",
        "",
        "| method | psnr_mask |",
        "|---|---|",
        f"| spliced input (generated content) | {shown('psnr_mask_spliced_input')} |",
        f"| mean fill | {shown('psnr_mask_mean_fill')} |",
        f"| skimage inpaint_biharmonic | {shown('psnr_mask_biharmonic')} |",
        f"| gandefect repairer | **{shown('psnr_mask')}** |",
        (
            f"| the repairer's pull-push fill alone (its starting point; not a gate baseline) | "
            f"{shown('psnr_mask_pull_push')} |"
        ),
        "",
        (
            f"Largest change outside the masks: {shown('outside_mask_change', '.0f')} (generated), "
            f"{shown('spliced_outside_mask_change', '.0f')} (spliced)."
        ),
        "",
        "## Figures",
        "",
        *[f"![{p.stem}]({p.name})" for p in figures],
    ]
    path = out / "repair.md"
    path.write_text("\n".join(lines) + "\n")
    return path
