"""Detector stage: fake sets, both detector families, leave-one-loss-out evaluation, registry."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from gandefect.config import Config
from gandefect.data import sources
from gandefect.data.datasets import load_pngs, to_uint8
from gandefect.data.fakes import FakeSet, family_of, fakes_root, read_fakes, write_fake_set
from gandefect.data.snapshot import Progress, read_manifest
from gandefect.detect.cnn import CNNConfig, CNNDetector
from gandefect.detect.common import Detector, Labeled
from gandefect.detect.model import load_detector, log_detector
from gandefect.detect.spectral import SpectralConfig, SpectralDetector
from gandefect.errors import BadInputError
from gandefect.evaluate import plots
from gandefect.evaluate.detection import auc, evaluate, robustness_mean
from gandefect.evaluate.perturb import PERTURBATIONS
from gandefect.lifecycle import registry, tracking, versioning

FAKES_STAGE = "fakes"
DETECTOR_MODEL = "gandefect-detector"
JUDGE_MODEL = "gandefect-judge"


# -- fake sets -------------------------------------------------------------------------
def _version_fakes(cfg: Config) -> str:
    if not (cfg.versioning.enabled and versioning.is_dvc_repo(cfg.root)):
        return versioning.UNVERSIONED
    versioning.commit_stage(cfg, FAKES_STAGE)
    versioning.push_stage(cfg, FAKES_STAGE)
    return versioning.stage_out_hash(cfg.root, FAKES_STAGE, "data/fakes") or versioning.UNVERSIONED


def registered_generators(cfg: Config) -> dict[str, str]:
    """name -> model URI for every registered generator (latest version) and its early checkpoints."""
    import mlflow

    tracking.setup(cfg)
    client = mlflow.MlflowClient()
    found = {}
    for loss in cfg.gan.losses:
        try:
            versions = client.search_model_versions(f"name = 'gandefect-generator-{loss}'")
        except mlflow.exceptions.MlflowException:
            versions = []
        if not versions:
            continue
        latest = max(versions, key=lambda v: int(v.version))
        found[loss] = f"models:/gandefect-generator-{loss}/{latest.version}"
        for tag, uri in client.get_run(latest.run_id).data.tags.items():
            if tag.startswith("early_generator_epoch"):
                found[f"{loss}-epoch{tag.removeprefix('early_generator_epoch')}"] = uri
    if not found:
        raise BadInputError("no registered generators: run `gandefect train-gans` first")
    return found


def run_sample_fakes(cfg: Config, progress: Progress | None = None) -> tuple[list[FakeSet], str, dict[str, str]]:
    """Sample every registered generator with a fixed seed into data/fakes/<name>/.

    Returns the fake sets, their DVC version and the generator URIs they came from."""
    sets = []
    n = cfg.detect.fakes_per_generator
    generators = registered_generators(cfg)
    for i, (name, uri) in enumerate(sorted(generators.items()), start=1):
        g = registry.load_torch_model(uri)
        with torch.no_grad():
            z = torch.randn(n, g.cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 17))
            arr = to_uint8(g(z))
        mode = "L" if arr.ndim == 3 else "RGB"
        # the manifest names the generator, not its (run-specific) URI, so identical samples
        # give an identical DVC hash on every machine
        sets.append(write_fake_set(cfg, name, [Image.fromarray(a, mode) for a in arr], f"generator:{name}"))
        if progress:
            progress("sampling fakes", i, len(generators))
    return sets, _version_fakes(cfg), generators


def run_ingest_fakes(cfg: Config, folder: str, name: str) -> tuple[FakeSet, int, str]:
    """Add a folder of externally generated images as generator `name` (its own family)."""
    source = sources.resolve_source(folder)
    good = [raw.image for raw in sources.iter_images(source) if raw.image is not None]
    skipped = sources.count(source) - len(good)
    fake_set = write_fake_set(cfg, name, good, f"folder:{Path(folder).name}")
    return fake_set, skipped, _version_fakes(cfg)


# -- data ------------------------------------------------------------------------------
def load_labeled(cfg: Config, split: str) -> Labeled:
    real = read_manifest(cfg.real_dir)
    real = real[real["split"] == split]
    fakes = read_fakes(cfg)
    if fakes.empty:
        raise BadInputError("no fake sets in data/fakes: run `gandefect train-detectors` after `train-gans`")
    fakes = fakes[fakes["split"] == split]
    images = np.concatenate([load_pngs(real["path"], cfg.real_dir), load_pngs(fakes["path"], fakes_root(cfg))])
    labels = np.r_[np.zeros(len(real), int), np.ones(len(fakes), int)]
    return Labeled(images, labels, np.r_[np.array(["real"] * len(real)), fakes["generator"].to_numpy()])


def make_detector(cfg: Config, family: str) -> Detector:
    channels = 1 if cfg.data.mode == "L" else 3
    if family == "cnn":
        return CNNDetector(CNNConfig(channels=channels, seed=cfg.seed, **cfg.detect.cnn.model_dump()))
    return SpectralDetector(SpectralConfig(seed=cfg.seed, **cfg.detect.spectral.model_dump()))


# -- training and evaluation -------------------------------------------------------------
@dataclass
class FamilyResult:
    family: str
    detector: Detector
    metrics: dict[str, float]
    p_test: np.ndarray
    train_seconds: float
    unseen: dict[str, float] = field(default_factory=dict)
    loo_trained_on: dict[str, list[str]] = field(default_factory=dict)


def _families(data: Labeled) -> np.ndarray:
    return np.array([g if g == "real" else family_of(g) for g in data.generators])


def without_family(data: Labeled, family: str) -> Labeled:
    """The same images minus every fake of one generator family (order kept)."""
    keep = _families(data) != family
    return Labeled(data.images[keep], data.labels[keep], data.generators[keep])


def leave_one_out(cfg: Config, family: str, train: Labeled, val: Labeled, test: Labeled,
                  progress: Progress | None = None):
    """For each generator family L: train without any of L's samples, score real test vs L's test."""
    test_families = _families(test)
    fams = sorted(set(_families(train)) - {"real"})
    unseen, trained_on = {}, {}
    for loss in fams:
        det = make_detector(cfg, family).fit(without_family(train, loss)).calibrate(without_family(val, loss))
        held_out = (test_families == "real") | (test_families == loss)
        unseen[loss] = auc(test.labels[held_out], det.score(test.images[held_out]))
        trained_on[loss] = det.trained_on
        if progress:
            progress(f"leave-one-out {family}", len(unseen), len(fams))
    return unseen, trained_on


def _report(cfg: Config, results: dict[str, FamilyResult], test: Labeled, winner: str) -> tuple[Path, list[Path]]:
    out = cfg.report_dir / "detectors"
    out.mkdir(parents=True, exist_ok=True)
    figures = [plots.roc_per_generator(r.p_test, test, out / f"roc-{f}.png", f"ROC per generator: {f}")
               for f, r in results.items()]
    figures.append(plots.robustness({f: r.metrics for f, r in results.items()}, list(PERTURBATIONS), out / "robustness.png"))
    figures.append(plots.reliability({f: (r.p_test, test.labels) for f, r in results.items()}, out / "reliability.png"))
    for f, r in results.items():
        wrong = np.flatnonzero((r.p_test >= r.detector.threshold) != test.labels.astype(bool))
        confidence = np.abs(r.p_test[wrong] - r.detector.threshold)
        order = wrong[np.argsort(-confidence)]
        pick = order if len(order) <= 12 else np.r_[order[:6], order[-6:]]
        caps = [f"{test.generators[i]} p={r.p_test[i]:.2f}" for i in pick]
        maps = r.detector.defect_map(test.images[pick]) if len(pick) else np.zeros((0,) + test.images.shape[1:3])
        figures.append(plots.error_grid(test.images[pick], maps, caps, out / f"errors-{f}.png",
                                        f"{f}: most (left) and least confident errors with defect maps"))
    keys = ["auc_seen", "ap_seen", "auc_unseen_min", "auc_unseen_mean"] + [f"auc_{k}" for k in PERTURBATIONS] + \
           ["ece", "threshold", "acc_real", "acc_fake", "pixel_ap", "iou", "map_threshold", "train_seconds",
            "images_per_second"]
    table = pd.DataFrame({f: {k: r.metrics.get(k, float("nan")) for k in keys} for f, r in results.items()})
    unseen = pd.DataFrame({f: r.unseen for f, r in results.items()})
    lines = ["# Detectors", "", f"Winner (by auc_unseen_min, ties by robustness): **{winner}**.", "",
             table.to_markdown(floatfmt=".4f"), "", "## Leave-one-generator-out (auc_unseen_<loss>)", "",
             unseen.to_markdown(floatfmt=".4f") if not unseen.empty else "(disabled)", "",
             "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    path = out / "detectors.md"
    path.write_text("\n".join(lines) + "\n")
    return path, figures


def _images_per_second(detector: Detector, images: np.ndarray, n: int = 1000) -> float:
    batch = np.resize(images, (n,) + images.shape[1:])
    start = time.perf_counter()
    detector.score(batch)
    return n / (time.perf_counter() - start)


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


def run_train_detectors(cfg: Config, sample: bool = True, flow_run_id: str | None = None,
                        progress: Progress | None = None, gate: bool = True) -> DetectorSummary:
    """Sample fakes, train and evaluate both families, register the winner and the judge."""
    import mlflow

    from gandefect.stages.gans import data_version

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    generators = None
    if sample:
        _, fakes_version, generators = run_sample_fakes(cfg, progress)
    else:
        fakes_version = _version_fakes(cfg)
    # the spliced benchmark follows the fake sets it is made of
    from gandefect.stages.localize import localize, run_build_spliced

    _, spliced_version = run_build_spliced(cfg)
    version = data_version(cfg)
    train, val, test = (load_labeled(cfg, s) for s in ("train", "val", "test"))
    results: dict[str, FamilyResult] = {}
    for family in cfg.detect.families:
        started = time.perf_counter()
        det = make_detector(cfg, family).fit(train, progress).calibrate(val)
        seconds = time.perf_counter() - started
        metrics, p = evaluate(det, test)
        metrics.update(train_seconds=seconds, images_per_second=_images_per_second(det, test.images))
        metrics.update({k: v for k, v in localize(cfg, det).items() if k != "spliced_test_images"})
        result = FamilyResult(family, det, metrics, p, seconds)
        if cfg.detect.leave_one_out:
            result.unseen, result.loo_trained_on = leave_one_out(cfg, family, train, val, test, progress)
            metrics.update({f"auc_unseen_{k}": v for k, v in result.unseen.items()})
            metrics["auc_unseen_min"] = float(np.nanmin(list(result.unseen.values())))
            metrics["auc_unseen_mean"] = float(np.nanmean(list(result.unseen.values())))
        results[family] = result
    rank = lambda f: (results[f].metrics.get("auc_unseen_min", results[f].metrics["auc_seen"]),  # noqa: E731
                      robustness_mean(results[f].metrics))
    winner = max(results, key=rank)
    report, figures = _report(cfg, results, test, winner)
    summary = DetectorSummary(results, winner, report, fakes_version, spliced_version)
    tracking.setup(cfg)
    for family, r in results.items():
        with tracking.start_run(cfg, tracking.DETECTOR_EXPERIMENT, f"detector-{family}", version, flow_run_id) as run:
            mlflow.set_tags({"fakes_version": fakes_version, "spliced_version": spliced_version})
            if generators:
                mlflow.log_dict(generators, "generators.json")
            mlflow.log_params({"family": family, "trained_on": ",".join(r.detector.trained_on),
                               "platt_a": r.detector.platt[0], "platt_b": r.detector.platt[1]})
            mlflow.log_metrics({k: v for k, v in r.metrics.items() if np.isfinite(v)})
            mlflow.log_dict({"trained_on": r.detector.trained_on, "leave_one_out": r.loo_trained_on},
                            "training_manifest.json")
            tracking.log_artifacts([report, *figures], "report")
            info = log_detector(r.detector, "detector", test.images[:2])
            role = DETECTOR_MODEL if family == winner else JUDGE_MODEL
            tags = {"data_version": version, "fakes_version": fakes_version, "family": family,
                    "threshold": f"{r.detector.threshold:.6f}", "map_threshold": f"{r.detector.map_threshold:.6f}",
                    "pixel_ap": f"{r.metrics['pixel_ap']:.4f}", "iou": f"{r.metrics['iou']:.4f}", "run_id": run.info.run_id,
                    "auc_unseen_min": f"{r.metrics.get('auc_unseen_min', float('nan')):.4f}"}
            mv = registry.register(info.model_uri, role, tags)
            if role == DETECTOR_MODEL:
                summary.detector_version = mv.version
            else:
                summary.judge_version = mv.version
    if gate and summary.detector_version:
        from gandefect.lifecycle import gates

        summary.gate = gates.apply_gate(cfg, gates.gate(cfg, DETECTOR_MODEL, summary.detector_version))
    return summary


def run_evaluate_detector(cfg: Config, model_uri: str | None = None) -> tuple[str, dict[str, float]]:
    """Score a registered (or any logged) detector on the current test split."""
    tracking.setup(cfg)
    uri = model_uri or registry.latest_uri(DETECTOR_MODEL, "train-detectors")
    det = load_detector(uri)
    metrics, _ = evaluate(det, load_labeled(cfg, "test"))
    path = cfg.report_dir / "detectors" / "evaluate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": uri, **metrics}, indent=2) + "\n")
    return uri, metrics
