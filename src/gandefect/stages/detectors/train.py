"""The train-detectors stage: both families trained and evaluated, leave-one-out for the winner,
the winner and the judge registered and gated."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from gandefect import faults, hardware
from gandefect.config import Config
from gandefect.data.snapshot import Progress
from gandefect.detect import families as detector_families
from gandefect.detect.common import Detector
from gandefect.errors import BadInputError
from gandefect.evaluate.figures import Figures, missing_from_tags
from gandefect.evaluate.localization import localize
from gandefect.lifecycle import champion_record, gates, registry, tracking, versioning
from gandefect.lifecycle.registry import log_detector
from gandefect.lifecycle.spliced import build_spliced
from gandefect.names import DETECTOR_EXPERIMENT, DETECTOR_MODEL, JUDGE_MODEL, STAGE_KEY
from gandefect.stages.detectors.eval_data import EvalData, prepare_eval_data, without_family
from gandefect.stages.detectors.evaluation import (
    ChampionToday,
    evaluate_champion,
    evaluate_detector,
    load_champion,
    score_histogram,
    summarize_unseen,
)
from gandefect.stages.detectors.fakes import _version_fakes, run_sample_fakes
from gandefect.stages.detectors.fit import FamilyResult, fit_detector
from gandefect.stages.detectors.held_out import leave_one_out
from gandefect.stages.detectors.report import images_per_second, write_report


@dataclass
class DetectorSummary:
    results: dict[str, FamilyResult]
    winner: str
    report: Path
    fakes_version: str
    spliced_version: str = ""
    detector_version: str | None = None
    judge_version: str | None = None
    gate: object | None = None  # gandefect.lifecycle.gates.GateResult of the new detector
    resumed: bool = False  # registered by an interrupted run with the same inputs, gated now


def _rank(metrics: dict[str, float]) -> tuple[float, float]:
    """Winner order: the share of generators' samples caught in the wild, averaged over generators,
    minus the worst condition's reals called fake; then the clean AUC. (The mean, not the worst
    generator: a generator no family catches yet would otherwise make the choice by fpr alone.) A
    missing figure counts as the worst it could be."""

    def known(key: str, worst: float) -> float:
        value = metrics.get(key, worst)
        return worst if np.isnan(value) else value

    return known("tpr_wild_mean", 0.0) - known("fpr_real_max", 1.0), known("auc_seen", 0.0)


def _judge(results: dict[str, FamilyResult], winner: str) -> str | None:
    """The family registered as the judge (the repair evaluation's detector, never the one the repair
    loop uses): the best of the others by the winner's `_rank`, ties to the earlier family; None alone."""
    return max((f for f in results if f != winner), key=lambda f: _rank(results[f].metrics), default=None)


def resume_registered(cfg: Config, stage_key: str) -> DetectorSummary | None:
    """The candidate a killed flow registered under this stage key (the same data, params and
    generators), gated now instead of trained again; None when there is none."""
    tracking.setup(cfg)
    mv = registry.latest_version_with_tag(DETECTOR_MODEL, STAGE_KEY, stage_key)
    if mv is None:
        return None
    run = mlflow.MlflowClient().get_run(mv.run_id)
    try:
        recorded = mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/champion_today.json")
        figures = Figures(recorded["metrics"])
        for key, why in recorded.get("missing", {}).items():
            figures.lack(key, why)
        champion = ChampionToday(str(recorded["champion_version"]), figures, set())
    except Exception:  # noqa: BLE001 - there was no champion when it was trained
        champion = None
    judge = registry.latest_version_with_tag(JUDGE_MODEL, STAGE_KEY, stage_key)
    family, metrics = mv.tags["family"], Figures(run.data.metrics)
    for key, why in missing_from_tags(run.data.tags).items():
        metrics.lack(key, why)
    summary = DetectorSummary(
        {family: FamilyResult(family, None, metrics, np.array([]), metrics.get("train_seconds", 0.0))},
        family,
        cfg.report_dir / "detectors" / "detectors.md",
        mv.tags.get("fakes_version", ""),
        run.data.tags.get("spliced_version", ""),
        str(mv.version),
        str(judge.version) if judge else None,
        resumed=True,
    )
    _gate_and_watch(cfg, summary, champion, mv.tags.get("data_version", ""))
    return summary


def _gate_and_watch(cfg: Config, summary: DetectorSummary, champion: ChampionToday | None, version: str) -> None:
    """The model gate of the registered winner (aliases moved), and the served champion's figures for `watch`."""
    result = gates.gate(
        cfg, DETECTOR_MODEL, summary.detector_version, champion_today=champion.metrics if champion else None
    )
    summary.gate = gates.apply_gate(cfg, result)
    # the champion after the gate, on today's data: the candidate if it was promoted, else the old one
    promoted = gates.CHAMPION in result.aliases
    served = (
        (str(summary.detector_version), summary.results[summary.winner].metrics)
        if promoted
        else ((champion.version, champion.metrics) if champion else None)
    )
    if served is not None:
        champion_record.write(
            cfg,
            champion_record.ChampionFigures(
                DETECTOR_MODEL,
                served[0],
                version,
                summary.fakes_version,
                "gate",
                {k: v for k, v in served[1].items() if np.isfinite(v)},
            ),
        )


def run_train_detectors(
    cfg: Config,
    sample: bool = True,
    flow_run_id: str | None = None,
    progress: Progress | None = None,
    gate: bool = True,
    without: list[str] = (),
    stage_key: str | None = None,
    resume: bool = True,
) -> DetectorSummary:
    """Sample fakes, train and evaluate both families, register the winner and the judge.
    `without`: generator families left out of training (and calibration), kept in the evaluation.
    `stage_key` (the flow's cache key): the registered versions carry it, and a candidate a
    killed flow registered under the same key is gated instead of trained again (unless `resume`
    is off: `gandefect run --force`)."""
    if stage_key and resume and gate and not without:
        resumed = resume_registered(cfg, stage_key)
        if resumed is not None:
            return resumed
    hardware.setup(cfg.device, cfg.deterministic, cfg.threads)
    generators = None
    if sample:
        _, fakes_version, generators = run_sample_fakes(cfg, progress)
    else:
        fakes_version = _version_fakes(cfg)
    # the spliced benchmark follows the fake sets it is made of
    _, spliced_version = build_spliced(cfg)
    version = versioning.data_version(cfg)
    data = _training_data(cfg, without)
    tracking.setup(cfg)
    # the champion: the start of an incremental candidate (not one trained without a family: its
    # weights know that family) and, after training, the baseline judged on the candidate's data
    found = load_champion(hardware.resolve(cfg.device)) if gate else None
    start = found[1] if found and cfg.detect.cnn.warm_start and not without else None
    results = _fit_families(cfg, data, progress, start)
    winner = max(results, key=lambda f: _rank(results[f].metrics))
    judge = _judge(results, winner)
    champion, new_families = _generalization(cfg, results[winner], data, found, progress)
    report, figures = write_report(cfg, results, data.test, winner)
    summary = DetectorSummary(results, winner, report, fakes_version, spliced_version)
    provenance = _Provenance(
        version,
        fakes_version,
        spliced_version,
        generators,
        list(without),
        found[0] if found else "none",
        stage_key if not without else None,
        flow_run_id,
        [report, *figures],
    )
    for family, r in results.items():
        role = {winner: DETECTOR_MODEL, judge: JUDGE_MODEL}.get(family)
        today = _champion_today(champion, new_families) if family == winner else None
        registered = _track(cfg, r, role, provenance, data, today)
        if role == DETECTOR_MODEL:
            summary.detector_version = registered
        elif role == JUDGE_MODEL:
            summary.judge_version = registered
    faults.reached("detectors:registered")
    if gate and summary.detector_version:
        _gate_and_watch(cfg, summary, champion, version)
    return summary


def _training_data(cfg: Config, without: list[str]) -> EvalData:
    """The evaluation data, with each family in `without` left out of training and calibration."""
    data = prepare_eval_data(cfg)
    known = set(data.train.families) - {"real"}
    for family in without:
        if family not in known:
            raise BadInputError(
                f"--without {family}: no such generator family in data/fakes ({', '.join(sorted(known))})"
            )
        data.train = without_family(data.train, family)
        data.val_mix, data.val_groups = data.val_mix_without(family)
    return data


def _fit_families(
    cfg: Config, data: EvalData, progress: Progress | None, start: Detector | None
) -> dict[str, FamilyResult]:
    """Every selected detector family trained on the same data and evaluated by the protocol."""
    results: dict[str, FamilyResult] = {}
    for family in detector_families.selected(cfg.detect.families):
        started = time.perf_counter()
        det = fit_detector(cfg, family, data.train, data.val_mix, data.val_groups, progress, start=start)
        seconds = time.perf_counter() - started
        metrics, p = evaluate_detector(cfg, det, data)
        metrics.update(train_seconds=seconds, images_per_second=images_per_second(det, data.test.images))
        metrics.update(localize(cfg, det))
        results[family] = FamilyResult(family, det, metrics, p, seconds)
    return results


def _generalization(
    cfg: Config, result: FamilyResult, data: EvalData, found: tuple | None, progress: Progress | None
) -> tuple[ChampionToday | None, set[str]]:
    """Leave-one-out for the served family (the judge's is not served), then the champion judged
    on exactly the candidate's data, before anything is registered; returns it and the families
    the candidate is judged on that the champion never was."""
    if cfg.detect.leave_one_out:
        loo, result.loo_trained_on = leave_one_out(cfg, result.family, data, progress)
        result.metrics.update(loo)
        result.unseen = {k.removeprefix("auc_unseen_"): v for k, v in loo.items() if k.startswith("auc_unseen_")}
    champion = evaluate_champion(cfg, data, found) if found else None
    new_families = set(result.unseen) - champion.families if champion and cfg.detect.leave_one_out else set()
    if cfg.detect.leave_one_out:
        summarize_unseen(result.metrics, new_families)
    return champion, new_families


def _champion_today(champion: ChampionToday | None, new_families: set[str]) -> dict | None:
    """What the winner's run records of the champion it was judged against (a resumed run's gate reads it)."""
    if champion is None:
        return None
    return {
        "champion_version": champion.version,
        "metrics": champion.metrics.finite(),
        "missing": champion.metrics.missing,
        "new_families": sorted(new_families),
    }


@dataclass(frozen=True)
class _Provenance:
    """What every detector run of one stage records beside its own figures."""

    data_version: str
    fakes_version: str
    spliced_version: str
    generators: dict | None  # the generator versions the fakes were sampled from (None: not sampled now)
    without: list[str]
    warm_start_from: str  # the champion's version a warm start began from, or "none"
    stage_key: str | None  # the flow's cache key, when the registered versions may be resumed
    flow_run_id: str | None
    report: list[Path]


def _track(
    cfg: Config, r: FamilyResult, role: str | None, p: _Provenance, data: EvalData, champion_today: dict | None
) -> str | None:
    """One family's MLflow run: its parameters, figures, manifests and model; registered as `role`
    (the detector or the judge) when it has one. Returns the registered version."""
    family = r.family
    with tracking.start_run(cfg, DETECTOR_EXPERIMENT, f"detector-{family}", p.data_version, p.flow_run_id) as run:
        mlflow.set_tags({"fakes_version": p.fakes_version, "spliced_version": p.spliced_version})
        if p.generators:
            mlflow.log_dict(p.generators, "generators.json")
        mlflow.log_params(
            {
                "family": family,
                "trained_on": ",".join(r.detector.trained_on),
                "trained_without": ",".join(p.without) or "none",
                "warm_start_from": p.warm_start_from if hasattr(r.detector, "started_from") else "none",
                "bf16": r.detector.bf16,  # the arithmetic `precision` resolved to on this machine
                "platt_a": r.detector.platt[0],
                "platt_b": r.detector.platt[1],
            }
        )
        mlflow.log_metrics(r.metrics.finite())
        mlflow.set_tags(r.metrics.missing_tags())  # what the data could not support, and why
        mlflow.log_dict(
            {"trained_on": r.detector.trained_on, "leave_one_out": r.loo_trained_on}, "training_manifest.json"
        )
        mlflow.log_dict(score_histogram(r.detector, data), "score_histogram.json")
        if champion_today is not None:
            mlflow.log_dict(champion_today, "champion_today.json")
        tracking.log_artifacts(p.report, "report")
        info = log_detector(r.detector, "detector", data.test.images[:2])
        if role is None:  # neither winner nor judge: tracked and logged, not registered
            return None
        tags = {
            "data_version": p.data_version,
            "fakes_version": p.fakes_version,
            "family": family,
            "threshold": f"{r.detector.threshold:.6f}",
            "map_threshold": f"{r.detector.map_threshold:.6f}",
            "pixel_ap": f"{r.metrics['pixel_ap']:.4f}",
            "iou": f"{r.metrics['iou']:.4f}",
            "run_id": run.info.run_id,
            "auc_unseen_min": f"{r.metrics.get('auc_unseen_min', float('nan')):.4f}",
        }
        if p.stage_key:
            tags[STAGE_KEY] = p.stage_key
        return registry.register(info.model_uri, role, tags).version
