"""A detector judged on today's data: the clean and wild figures, the champion's on a
candidate's data, `gandefect watch`, `gandefect evaluate-detector` and a gate run on its own."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from gandefect import hardware
from gandefect.config import Config
from gandefect.data.fakes import family_of
from gandefect.detect.common import Detector
from gandefect.errors import BadInputError
from gandefect.evaluate import drift, wild
from gandefect.evaluate.detection import evaluate
from gandefect.evaluate.figures import Figures
from gandefect.evaluate.localization import localize
from gandefect.lifecycle import champion_record, gates, registry, tracking, versioning
from gandefect.lifecycle.registry import load_detector
from gandefect.names import DETECTOR_MODEL
from gandefect.stages.detectors.eval_data import EvalData, prepare_eval_data
from gandefect.stages.detectors.fakes import _version_fakes


def evaluate_detector(cfg: Config, det: Detector, data: EvalData) -> tuple[Figures, np.ndarray]:
    """Clean-test metrics, the wild verdicts and their worst cases (everything but leave-one-out),
    for every generator of today's data (missing, with the reason, where its test samples are too few)."""
    generators, n_min = data.generators, cfg.gates.min_samples
    metrics, p = evaluate(det, data.test, generators, n_min)
    metrics.update(wild.evaluate_wild(det, data.wild_test, generators=generators, min_samples=n_min))
    metrics.update(sample_counts(data))
    return wild.summarize(metrics, cfg.detect.wild.gated, generators), p


def sample_counts(data: EvalData) -> dict[str, float]:
    """n_<split>_<generator>: how many images each generator (and `real`) has in train, val and
    test; the gate weighs a slice's figure by its test count. n_ingested_<generator>: how many
    images `ingest-fakes` brought of it (the gate's few-shot floors follow it)."""
    out = {f"n_ingested_{g}": float(n) for g, n in data.ingested.items()}
    for split in ("train", "val", "test"):
        names, counts = np.unique(getattr(data, split).generators.astype(str), return_counts=True)
        out.update({f"n_{split}_{g}": float(n) for g, n in zip(names, counts)})
    return out


def evaluate_served(cfg: Config, det: Detector, data: EvalData) -> Figures:
    """A registered detector as it is served (its own threshold and map threshold) on today's
    data: clean test, the wild conditions and the spliced benchmark, every current generator."""
    metrics, _ = evaluate_detector(cfg, det, data)
    metrics.update(localize(cfg, det, choose=False))
    return metrics


@dataclass
class ChampionToday:
    version: str
    metrics: Figures  # its figures on the candidate's data
    families: set[str]  # the families (today's grouping) of the generators it was trained on
    trained_on: list[str] = field(default_factory=list)  # ... and the generators themselves


def load_champion(device: torch.device = hardware.CPU) -> tuple[str, Detector] | None:
    """(version, detector) of the champion detector, computing on `device`; None without one."""
    version = gates.alias_version(DETECTOR_MODEL, gates.CHAMPION)
    if version is None:
        return None
    return str(version), load_detector(f"models:/{DETECTOR_MODEL}/{version}", device)


def evaluate_champion(cfg: Config, data: EvalData, found: tuple[str, Detector] | None = None) -> ChampionToday | None:
    """The current champion (or `found`, as load_champion returns it) on the candidate's data;
    None without a champion."""
    found = found or load_champion(hardware.resolve(cfg.device))
    if found is None:
        return None
    version, det = found
    families = dict(zip(data.train.generators.tolist(), data.train.families.tolist()))  # today's, by generator
    return ChampionToday(
        version,
        evaluate_served(cfg, det, data),
        {families.get(g, family_of(g)) for g in det.trained_on},
        list(det.trained_on),
    )


def summarize_unseen(metrics: Figures, new: set[str]) -> None:
    """Adds to `metrics` auc_unseen_min / _mean over the held-out families the champion was trained
    on too: a family it never saw is judged directly instead (its auc_gen and tpr_fake_wild beside
    the champion's, on today's data), since holding it out of the candidate as well says nothing
    about the candidate against the champion; the minimum over every family stays as
    auc_unseen_min_all; tpr_unseen_min is the worst held-out family's share caught."""
    unseen = [
        k
        for k in list(metrics)
        if k.startswith("auc_unseen_") and not k.startswith(("auc_unseen_min", "auc_unseen_mean"))
    ]
    known = [k for k in unseen if k.removeprefix("auc_unseen_") not in new] or unseen
    metrics.worst("auc_unseen_min", known)
    metrics.mean("auc_unseen_mean", known)
    metrics.worst("auc_unseen_min_all", unseen)
    metrics.worst("tpr_unseen_min", [k for k in list(metrics) if k.startswith("tpr_unseen_wild_")])


def gate_figures(cfg: Config, version: str, name: str = DETECTOR_MODEL) -> tuple[Figures, Figures | None]:
    """Version `version` of `name` and the champion, both evaluated on today's data, for a gate run
    on its own (`gandefect gate`); leave-one-out figures (and why any is missing) come from the
    version's own run."""
    tracking.setup(cfg)
    data = prepare_eval_data(cfg)
    logged = gates.version_metrics(name, version)
    candidate = Figures({k: v for k, v in logged.items() if gates.recorded_only(k)})
    candidate.missing.update({k: why for k, why in logged.missing.items() if gates.recorded_only(k)})
    candidate.update(
        evaluate_served(cfg, load_detector(f"models:/{name}/{version}", hardware.resolve(cfg.device)), data)
    )
    champion = gates.alias_version(name, gates.CHAMPION)
    if champion is None or champion == str(version):
        return candidate, None
    return candidate, evaluate_served(
        cfg, load_detector(f"models:/{name}/{champion}", hardware.resolve(cfg.device)), data
    )


def run_watch(cfg: Config) -> tuple[champion_record.ChampionFigures, list[str]]:
    """Re-evaluate the champion detector on the current data; record it and list the generators it misses."""
    tracking.setup(cfg)
    data = prepare_eval_data(cfg)
    found = evaluate_champion(cfg, data)
    if found is None:
        raise BadInputError(f"no champion {DETECTOR_MODEL}: run `gandefect run` first")
    figures = champion_record.ChampionFigures(
        DETECTOR_MODEL,
        found.version,
        versioning.data_version(cfg),
        _version_fakes(cfg),
        "watch",
        found.metrics,
        trained_on=list(found.trained_on),
    )
    champion_record.write(cfg, figures)
    return figures, champion_record.alerts(figures, cfg.gates)


def score_histogram(det: Detector, data: EvalData) -> dict:
    """The detector's scores on the validation mix (every gated condition) as the service counts
    them: the reference its served traffic is compared with (gandefect.evaluate.drift)."""
    p = det.score(data.val_mix.images)
    return {
        "buckets": list(drift.BUCKETS),
        "counts": drift.histogram(p),
        "flagged": float((p >= det.threshold).mean()),
        "threshold": float(det.threshold),
    }


def run_evaluate_detector(cfg: Config, model_uri: str | None = None) -> tuple[str, dict[str, float]]:
    """Score a registered (or any logged) detector on the current test split."""
    tracking.setup(cfg)
    uri = model_uri or registry.latest_uri(DETECTOR_MODEL, "train-detectors")
    det = load_detector(uri, hardware.resolve(cfg.device))
    data = prepare_eval_data(cfg)
    metrics, _ = evaluate_detector(cfg, det, data)
    path = cfg.report_dir / "detectors" / "evaluate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": uri, **metrics}, indent=2) + "\n")
    return uri, metrics
