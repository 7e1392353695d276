"""Detector stage: fake sets, both detector families, leave-one-family-out evaluation (a family is
how a generator is built: every DCGAN loss is one), registry.

By job: fakes (sampling and ingesting fake sets), fit (one detector family trained and calibrated),
eval_data (the labeled splits and the wild sets), held_out (leave-one-out), evaluation (a detector
and the champion judged on today's data, watch), report, train (the train-detectors stage)."""

from gandefect.stages.detectors.eval_data import EvalData, capped, load_labeled, prepare_eval_data, without_family
from gandefect.stages.detectors.evaluation import (
    ChampionToday,
    evaluate_champion,
    evaluate_detector,
    evaluate_served,
    gate_figures,
    load_champion,
    run_evaluate_detector,
    run_watch,
    summarize_unseen,
)
from gandefect.stages.detectors.fakes import ALIGNED, COMPONENT, run_ingest_fakes, run_sample_fakes
from gandefect.stages.detectors.fit import FamilyResult, envelope_for, fit_detector
from gandefect.stages.detectors.held_out import leave_one_out
from gandefect.stages.detectors.train import DetectorSummary, resume_registered, run_train_detectors

__all__ = [
    "ALIGNED",
    "COMPONENT",
    "ChampionToday",
    "DetectorSummary",
    "EvalData",
    "FamilyResult",
    "capped",
    "envelope_for",
    "evaluate_champion",
    "evaluate_detector",
    "evaluate_served",
    "fit_detector",
    "gate_figures",
    "leave_one_out",
    "load_champion",
    "load_labeled",
    "prepare_eval_data",
    "resume_registered",
    "run_evaluate_detector",
    "run_ingest_fakes",
    "run_sample_fakes",
    "run_train_detectors",
    "run_watch",
    "summarize_unseen",
    "without_family",
]
