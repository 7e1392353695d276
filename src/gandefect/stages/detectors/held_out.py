"""Leave-one-family-out: a model trained without each generator family, judged on that family
(side by side in worker processes; what a worker runs lives at this module's top)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from gandefect import hardware
from gandefect.config import Config
from gandefect.data import conditions
from gandefect.data.snapshot import Progress
from gandefect.detect import components
from gandefect.detect.common import Labeled
from gandefect.evaluate.figures import Figures
from gandefect.stages.detectors.eval_data import EvalData, capped, without_family
from gandefect.stages.detectors.fit import fit_detector


@dataclass
class HeldOut:
    """What one leave-one-out model needs, small enough to send to a worker process: the training
    set and validation mix without family `held`, and real test plus `held`'s test images, clean
    and under every wild condition."""

    held: str
    train: Labeled
    val_mix: Labeled
    val_groups: np.ndarray
    test_labels: np.ndarray  # real test images and `held`'s, in test order
    test_images: np.ndarray
    wild_held: dict[str, np.ndarray]  # condition -> `held`'s test images as the model sees them


def _held_out(cfg: Config, train: Labeled, data: EvalData, held: str) -> HeldOut:
    test_families = data.test.families
    keep = (test_families == "real") | (test_families == held)
    mine = test_families == held
    return HeldOut(
        held,
        without_family(train, held),
        *data.val_mix_without(held),
        data.test.labels[keep],
        data.test.images[keep],
        {c: data.wild_test.inputs[c][mine] for c in conditions.evaluated(cfg.detect.wild)},
    )


def fit_held_out(cfg: Config, family: str, job: HeldOut, threads: int | None = None) -> tuple[Figures, list[str]]:
    """Train detector family `family` without `job.held` and measure it on `job.held` (runs in a
    worker process, with `threads` torch threads); returns its metrics and what it trained on."""
    if threads:
        hardware.setup(cfg.device, cfg.deterministic, threads, share=True)
    det = fit_detector(cfg, family, job.train, job.val_mix, job.val_groups, held_out=True)
    held, metrics = job.held, Figures(min_samples=cfg.gates.min_samples)
    metrics.auc(
        f"auc_unseen_{held}", job.test_labels, det.score(job.test_images), "real test images", f"test samples of {held}"
    )
    for c, images in job.wild_held.items():
        metrics.share(f"tpr_unseen_{c}_{held}", det.score(images) >= det.threshold, f"test samples of {held}")
    metrics.worst(f"tpr_unseen_wild_{held}", [f"tpr_unseen_{c}_{held}" for c in cfg.detect.wild.gated])
    return metrics, det.trained_on


def _not_held_out(cfg: Config, held: str) -> Figures:
    """The leave-one-out figures of a family no model can be trained without: missing, with why."""
    why = f"without {held}, train or val holds no generated image to learn from"
    metrics = Figures(min_samples=cfg.gates.min_samples)
    for key in [f"auc_unseen_{held}", f"tpr_unseen_wild_{held}"] + [
        f"tpr_unseen_{c}_{held}" for c in conditions.evaluated(cfg.detect.wild)
    ]:
        metrics.lack(key, why)
    return metrics


LOO_PROCESSES_FROM = 2_000  # training images; below, the models train in this process (a worker takes seconds to start)


def loo_workers(cfg: Config, n: int, n_train: int) -> int:
    """Worker processes for n leave-one-out models of n_train training images each: one per core
    (on the CPU each on one torch thread), since a model's batches are made by single-threaded
    Python (PIL) for about a third of its step on a CPU and most of it on a GPU: side by side, the
    cores stay busy. On a GPU the workers share it (each holds its own CUDA context, a few hundred
    MB). Under LOO_PROCESSES_FROM images: none, the models train in this process."""
    return max(1, min(n, os.cpu_count() or 1)) if n_train >= LOO_PROCESSES_FROM else 1


def loo_threads(n: int, workers: int, cores: int) -> list[int]:
    """Torch threads of each of n leave-one-out models, in the order they are started: a core's
    share each, but the last n % workers (the rounds do not divide evenly) share all the cores,
    since they end the phase alone on a machine their siblings have left. Fixed before any model
    starts, so a model's figures do not depend on which finished first."""
    tail = n % workers
    return [max(1, cores // (tail if i >= n - tail else workers)) for i in range(n)]


def leave_one_out(cfg: Config, family: str, data: EvalData, progress: Progress | None = None):
    """For each generator family F: train without any of F's samples (train and val), then score
    real test vs F's test: auc_unseen_<F> on clean images, and at the LOO model's own served
    threshold the share of F's test samples called fake under every condition (tpr_unseen_<c>_<F>).
    The models train side by side in worker processes (`loo_workers`); each depends only on its
    data and the seed, so the figures do not depend on the order they finish in."""
    fams = sorted(set(data.train.families) - {"real", components.FAMILY})  # the bank is recipe, not a family
    train = capped(data.train, cfg.detect.loo_fakes_per_generator, cfg.seed)
    # the only family with samples in train or val: without it there is nothing to learn "generated" from
    others = [set(split.families) - {"real"} for split in (train, data.val_mix)]
    results: dict[str, tuple[Figures, list[str]]] = {
        held: (_not_held_out(cfg, held), []) for held in fams if any(not (families - {held}) for families in others)
    }
    # the longest first: the smallest come last, when the machine is freeing up (below)
    held_out = sorted((h for h in fams if h not in results), key=lambda h: -int((train.families != h).sum()))
    workers = loo_workers(cfg, len(held_out), len(train.labels))
    if progress:  # each model can take minutes: say the phase has begun, before its first one ends
        progress(f"leave-one-out {family}", len(results), len(fams))

    def done(held: str, result: tuple[Figures, list[str]]) -> None:
        results[held] = result
        if progress:
            progress(f"leave-one-out {family}", len(results), len(fams))

    if workers == 1:
        for held in held_out:
            done(held, fit_held_out(cfg, family, _held_out(cfg, train, data, held)))
    else:
        threads = loo_threads(len(held_out), workers, os.cpu_count() or 1)
        # spawn: a forked child of a process whose torch threads already ran can deadlock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {
                pool.submit(fit_held_out, cfg, family, _held_out(cfg, train, data, held), n): held
                for held, n in zip(held_out, threads)
            }
            for future in as_completed(futures):
                done(futures[future], future.result())
    metrics = Figures(min_samples=cfg.gates.min_samples)
    for held in fams:
        metrics.update(results[held][0])
    return metrics, {held: results[held][1] for held in fams}
