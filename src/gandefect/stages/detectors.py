"""Detector stage: fake sets, both detector families, leave-one-family-out evaluation (a family is
how a generator is built: every DCGAN loss is one), registry."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from PIL import Image

from gandefect import faults, hardware
from gandefect.config import Config
from gandefect.data import conditions, sources
from gandefect.data.datasets import load_pngs, to_tensor, to_uint8
from gandefect.data.fakes import EXTERNAL_SOURCE, FakeSet, fakes_root, family_of, read_fakes, write_fake_set
from gandefect.data.history import Envelope
from gandefect.data.snapshot import Progress, read_manifest
from gandefect.detect import components
from gandefect.detect import families as detector_families
from gandefect.detect.common import Detector, Labeled
from gandefect.errors import BadInputError
from gandefect.evaluate import drift, plots, wild
from gandefect.evaluate.detection import evaluate
from gandefect.evaluate.figures import Figures, missing_from_tags
from gandefect.gan import families as gan_families
from gandefect.gan.models import generate, noise
from gandefect.lifecycle import champion_record, gates, registry, tracking, versioning
from gandefect.lifecycle.registry import load_detector, log_detector
from gandefect.names import DETECTOR_EXPERIMENT, DETECTOR_MODEL, FAKES_DIR, FAKES_STAGE, JUDGE_MODEL, STAGE_KEY
from gandefect.stages.gans import registered_generators
from gandefect.stages.localize import localize, run_build_spliced


# -- fake sets -------------------------------------------------------------------------
def _version_fakes(cfg: Config) -> str:
    if not (cfg.versioning.enabled and versioning.is_dvc_repo(cfg.root)):
        return versioning.UNVERSIONED
    return versioning.version_stage(cfg, FAKES_STAGE, FAKES_DIR)


def run_sample_fakes(cfg: Config, progress: Progress | None = None) -> tuple[list[FakeSet], str, dict[str, str]]:
    """Sample every registered generator with a fixed seed into data/fakes/<name>/.

    Returns the fake sets, their DVC version and the generator URIs they came from."""
    sets = []
    generators = registered_generators(cfg)
    for i, (name, uri) in enumerate(sorted(generators.items()), start=1):
        early = family_of(name) != name
        n = cfg.detect.fakes_per_early_generator if early else cfg.detect.fakes_per_generator
        g = registry.load_torch_model(uri)
        family = gan_families.build_of(family_of(name))
        with torch.no_grad(), hardware.placed(g, hardware.resolve(cfg.device)):
            arr = to_uint8(generate(g, noise(g, n, torch.Generator().manual_seed(cfg.seed + 17))))
            # the manifest names the generator, not its (run-specific) URI, so identical samples
            # give an identical DVC hash on every machine
            sets.append(write_fake_set(cfg, name, _pil(arr), f"generator:{name}", family=family))
            if hasattr(g, "refine") and cfg.detect.aligned_per_generator and not early:
                sets.append(
                    write_fake_set(
                        cfg,
                        f"{name}{ALIGNED}",
                        _pil(_aligned(cfg, g)),
                        f"{ALIGNED_SOURCE}{name}",
                        family=family,
                        split="train",
                    )
                )
        if progress:
            progress("sampling fakes", i, len(generators))
    sets += _component_sets(cfg, progress)
    return sets, _version_fakes(cfg), generators


COMPONENT, COMPONENT_SOURCE = "component-", "component:"  # the component bank's sets (training only, never held out)


def _component_sets(cfg: Config, progress: Progress | None = None) -> list[FakeSet]:
    """Real train images through each kind of generator up-sampling (`gandefect.detect.components`),
    one training-only set per kind; none where `detect.components_per_kind` is 0 or the images have
    nothing to up-sample from. Sets of a kind no longer made are removed."""
    real = read_manifest(cfg.real_dir)
    real = real[real["split"] == "train"]
    x = to_tensor(load_pngs(real["path"], cfg.real_dir, cfg.data.shape))
    made = components.bank(
        x,
        cfg.detect.components_per_kind,
        cfg.detect.component_steps,
        cfg.seed + 31,
        hardware.resolve(cfg.device),
        progress,
    )
    for stale in fakes_root(cfg).glob(f"{COMPONENT}*"):
        if stale.is_dir() and stale.name.removeprefix(COMPONENT) not in made:
            shutil.rmtree(stale)
    return [
        write_fake_set(
            cfg,
            f"{COMPONENT}{kind}",
            _pil(to_uint8(images)),
            f"{COMPONENT_SOURCE}{kind}",
            family=components.FAMILY,
            split="train",
        )
        for kind, images in made.items()
    ]


ALIGNED, ALIGNED_SOURCE = (
    "-aligned",
    "aligned:",
)  # a generator's aligned set: real train images it refined (training only)
ALIGNED_STRENGTHS = (0.2, 0.35, 0.5, 0.65)  # how far each quarter of them is noised before it is denoised


def _pil(arr: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(a, "L" if arr.ndim == 3 else "RGB") for a in arr]


def _aligned(cfg: Config, g: torch.nn.Module) -> np.ndarray:
    """Real train images passed through generator `g`'s denoising (its `refine`): each keeps its
    content and gains `g`'s traces, so beside its real twin it teaches the traces, not the content
    (B-Free, Guillaro et al. 2025; Rajan et al. 2025). A seeded choice of the train split."""
    real = read_manifest(cfg.real_dir)
    real = real[real["split"] == "train"]
    rng = np.random.default_rng(cfg.seed + 23)
    pick = rng.choice(len(real), min(cfg.detect.aligned_per_generator, len(real)), replace=False)
    x = to_tensor(load_pngs(real["path"].iloc[np.sort(pick)], cfg.real_dir, cfg.data.shape))
    z = noise(g, len(x), torch.Generator().manual_seed(cfg.seed + 29))
    device = next(g.parameters()).device
    groups = np.array_split(np.arange(len(x)), len(ALIGNED_STRENGTHS))
    out = torch.cat(
        [
            torch.cat(
                [
                    g.refine(x[idx[i : i + 256]].to(device), strength, z[idx[i : i + 256]])
                    for i in range(0, len(idx), 256)
                ]
            )
            for idx, strength in zip(groups, ALIGNED_STRENGTHS)
            if len(idx)
        ]
    )
    return to_uint8(out)


MIN_FAMILY_IMAGES = 10  # a family's samples are split about 80/10/10: fewer leave val or test without one


def run_ingest_fakes(cfg: Config, folder: str, name: str) -> tuple[FakeSet, int, str]:
    """Add a folder of externally generated images as generator `name` (its own family)."""
    source = sources.resolve_source(folder)
    good = [raw.image for raw in sources.iter_images(source) if raw.image is not None]
    skipped = sources.count(source) - len(good)
    fake_set = write_fake_set(cfg, name, good, f"{EXTERNAL_SOURCE}{Path(folder).name}", least=MIN_FAMILY_IMAGES)
    return fake_set, skipped, _version_fakes(cfg)


# -- data ------------------------------------------------------------------------------
def load_labeled(cfg: Config, split: str) -> Labeled:
    real = read_manifest(cfg.real_dir)
    real = real[real["split"] == split]
    fakes = read_fakes(cfg)
    if fakes.empty:
        raise BadInputError("no fake sets in data/fakes: run `gandefect train-detectors` after `train-gans`")
    fakes = fakes[fakes["split"] == split]
    images = np.concatenate(
        [
            load_pngs(real["path"], cfg.real_dir, cfg.data.shape),
            load_pngs(fakes["path"], fakes_root(cfg), cfg.data.shape),
        ]
    )
    labels = np.r_[np.zeros(len(real), int), np.ones(len(fakes), int)]
    return Labeled(
        images,
        labels,
        np.r_[np.array(["real"] * len(real)), fakes["generator"].to_numpy()],
        np.r_[np.array(["real"] * len(real)), fakes["family"].to_numpy()].astype(object),
    )


# -- training and evaluation -------------------------------------------------------------
@dataclass
class FamilyResult:
    family: str
    detector: Detector
    metrics: Figures
    p_test: np.ndarray
    train_seconds: float
    unseen: dict[str, float] = field(default_factory=dict)
    loo_trained_on: dict[str, list[str]] = field(default_factory=dict)


def without_family(data: Labeled, family: str) -> Labeled:
    """The same images minus every fake of one generator family (order kept)."""
    return data.subset(data.families != family)


def capped(data: Labeled, per_generator: int, seed: int) -> Labeled:
    """Every real image and at most `per_generator` images of each generator (a seeded choice, order kept)."""
    rng = np.random.default_rng(seed)
    keep = data.generators == "real"
    for g in sorted(set(data.generators.tolist()) - {"real"}):  # sorted: set order changes per process
        idx = np.flatnonzero(data.generators == g)
        keep[rng.choice(idx, min(per_generator, len(idx)), replace=False)] = True
    return data.subset(keep)


def envelope_for(gated: list[str]) -> Envelope:
    """The served envelope: what the gated conditions cover (a condition not gated is outside)."""
    validated = [conditions.get(c) for c in gated]
    qualities = [c.jpeg_quality for c in validated if c.jpeg_quality is not None]
    return Envelope(
        min_jpeg_quality=min(qualities, default=101),
        max_downscale=max((c.shrink for c in validated), default=1.0),
        max_upscale=1 / min((c.detail for c in validated), default=1.0),
    )


@dataclass
class EvalData:
    """The splits, and the validation mix and test set under every condition (built once)."""

    train: Labeled
    val: Labeled
    test: Labeled
    val_mix: Labeled  # val under every gated condition, stacked
    val_groups: np.ndarray  # the condition of each val_mix row
    wild_test: wild.WildSet
    generators: list[str]  # today's generators: every one with samples in any split, but the training-only sets
    ingested: dict[str, int] = field(default_factory=dict)  # images of each set `ingest-fakes` brought from a folder

    def val_mix_without(self, family: str) -> tuple[Labeled, np.ndarray]:
        keep = self.val_mix.families != family
        return self.val_mix.subset(keep), self.val_groups[keep]


WILD_PROCESSES_FROM = 20_000  # encoded images (the default data's test set alone: 36,000)


def _check_both_classes(splits: dict[str, Labeled]) -> None:
    """Training and calibration need real and generated images in train and val: a BadInputError
    naming what is short, before anything is trained."""
    short = {name: split.class_counts() for name, split in splits.items() if split.class_counts().min() == 0}
    if short:
        what = "; ".join(f"{name}: {c[0]} real and {c[1]} generated images" for name, c in short.items())
        raise BadInputError(
            f"the detectors need real and generated images in train and val, and have {what}. "
            "Generated samples are split like real ones (about "
            "80/10/10): a generator that collapsed to one or two distinct images gives val none. "
            "Ingest more real images, or more (distinct) generated ones; nothing was trained."
        )


def prepare_eval_data(cfg: Config) -> EvalData:
    w = cfg.detect.wild
    train, val, test = (load_labeled(cfg, s) for s in ("train", "val", "test"))
    _check_both_classes({"train": train, "val": val})
    # the threshold rule reads only the real images; fakes are there for Platt scaling
    val = capped(val, w.val_fakes_per_generator, cfg.seed)
    # many images: the conditions are encoded in worker processes, one per core (spawn: see
    # leave_one_out); a few: on threads, since a worker takes seconds to start
    evaluated = conditions.evaluated(w)
    many = len(val.labels) * len(w.gated) + len(test.labels) * len(evaluated) >= WILD_PROCESSES_FROM
    with (
        ProcessPoolExecutor(min(len(evaluated), os.cpu_count() or 1), mp_context=multiprocessing.get_context("spawn"))
        if many
        else contextlib.nullcontext()
    ) as pool:
        wild_val = wild.build(val, w.gated, cfg.data.resize, pool=pool)
        wild_test = wild.build(test, evaluated, cfg.data.resize, envelope_for(w.gated), pool)
    val_mix = val.tiled(len(w.gated), np.concatenate([wild_val.inputs[c] for c in w.gated]))
    groups = np.repeat(np.array(w.gated), len(val.labels))
    fakes = read_fakes(cfg)
    training_only = set(fakes.loc[fakes["source"].str.startswith((ALIGNED_SOURCE, COMPONENT_SOURCE)), "generator"])
    generators = sorted(
        {g for split in (train, val, test) for g in split.generators.tolist()} - {"real"} - training_only
    )
    external = fakes[fakes["source"].astype(str).str.startswith(EXTERNAL_SOURCE)]
    ingested = {str(g): int(n) for g, n in external.groupby("generator").size().items()}
    return EvalData(train, val, test, val_mix, groups, wild_test, generators, ingested)


def fit_detector(
    cfg: Config,
    family: str,
    train: Labeled,
    val_mix: Labeled,
    groups: np.ndarray,
    progress: Progress | None = None,
    held_out: bool = False,
    start: Detector | None = None,
) -> Detector:
    """Train one detector (fine-tuned from `start` where its family can), calibrate it on the
    validation mix and set its served threshold and envelope."""
    det = detector_families.build(cfg, family, held_out, start).fit(train, progress)
    det.calibrate(val_mix, groups, cfg.detect.wild.fpr_target)
    det.envelope = envelope_for(cfg.detect.wild.gated)
    return det


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
        hardware.setup(cfg.device, cfg.deterministic, threads)
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
    held_out = [held for held in fams if held not in results]
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
        threads = max(1, (os.cpu_count() or 1) // workers)
        # spawn: a forked child of a process whose torch threads already ran can deadlock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {
                pool.submit(fit_held_out, cfg, family, _held_out(cfg, train, data, held), threads): held
                for held in held_out
            }
            for future in as_completed(futures):
                done(futures[future], future.result())
    metrics = Figures(min_samples=cfg.gates.min_samples)
    for held in fams:
        metrics.update(results[held][0])
    return metrics, {held: results[held][1] for held in fams}


def _report(cfg: Config, results: dict[str, FamilyResult], test: Labeled, winner: str) -> tuple[Path, list[Path]]:
    out = cfg.report_dir / "detectors"
    out.mkdir(parents=True, exist_ok=True)
    w = cfg.detect.wild
    figures = [
        plots.roc_per_generator(r.p_test, test, out / f"roc-{f}.png", f"ROC per generator: {f}")
        for f, r in results.items()
    ]
    figures.append(plots.robustness({f: r.metrics for f, r in results.items()}, w.conditions, out / "robustness.png"))
    figures.append(
        plots.wild_verdicts({f: r.metrics for f, r in results.items()}, w.conditions, w.gated, out / "wild.png")
    )
    figures.append(plots.reliability({f: (r.p_test, test.labels) for f, r in results.items()}, out / "reliability.png"))
    for f, r in results.items():
        wrong = np.flatnonzero((r.p_test >= r.detector.threshold) != test.labels.astype(bool))
        confidence = np.abs(r.p_test[wrong] - r.detector.threshold)
        order = wrong[np.argsort(-confidence)]
        pick = order if len(order) <= 12 else np.r_[order[:6], order[-6:]]
        caps = [f"{test.generators[i]} p={r.p_test[i]:.2f}" for i in pick]
        maps = r.detector.defect_map(test.images[pick]) if len(pick) else np.zeros((0,) + test.images.shape[1:3])
        figures.append(
            plots.error_grid(
                test.images[pick],
                maps,
                caps,
                out / f"errors-{f}.png",
                f"{f}: most (left) and least confident errors with defect maps",
            )
        )
    keys = [
        "auc_seen",
        "ap_seen",
        "auc_unseen_min",
        "auc_unseen_mean",
        "auc_unseen_min_all",
        "fpr_real_max",
        "tpr_wild_min",
        "tpr_unseen_min",
        "ece",
        "ece_jpeg75",
        "threshold",
        "acc_real",
        "acc_fake",
        "pixel_ap",
        "iou",
        "map_threshold",
        "train_seconds",
        "images_per_second",
    ]
    table = pd.DataFrame({f: {k: r.metrics.get(k, float("nan")) for k in keys} for f, r in results.items()})
    unseen = pd.DataFrame(
        {
            f: {
                k.removeprefix("auc_unseen_"): v
                for k, v in r.metrics.items()
                if k.startswith("auc_unseen_") and k not in ("auc_unseen_min", "auc_unseen_mean", "auc_unseen_min_all")
            }
            for f, r in results.items()
        }
    )
    unseen_wild = pd.DataFrame(
        {
            f: {
                k.removeprefix("tpr_unseen_wild_"): v
                for k, v in r.metrics.items()
                if k.startswith("tpr_unseen_wild_") and k != "tpr_unseen_min"
            }
            for f, r in results.items()
        }
    )
    m = results[winner].metrics
    wild_rows = [
        {
            "condition": c,
            "gated": "yes" if c in w.gated else "no",
            "fpr_real": m.get(f"fpr_real_{c}"),
            "uncertain_real": m.get(f"uncertain_real_{c}"),
            "tpr_fake (worst generator)": m.get(f"tpr_fake_{c}"),
            "auc": m.get(f"auc_{c}"),
        }
        for c in w.conditions
    ]
    lines = [
        "# Detectors",
        "",
        f"Winner (by the wild verdicts: mean share caught over generators minus the worst fpr_real, ties by auc_seen; leave-one-family-out is run for it): **{winner}**.",
        "",
        table.to_markdown(floatfmt=".4f"),
        "",
        f"## Verdicts in the wild ({winner}, at its served threshold {results[winner].detector.threshold:.4f})",
        "",
        (
            "Each condition is applied to one class at a time, as a client would send the file (real JPEG bytes "
            "for JPEG), and decoded by the service's upload path. fpr_real: real test images called fake; "
            "tpr_fake: the worst test generator's share called fake; uncertain_real: real images outside the "
            "validated envelope (answered `uncertain` by the service)."
        ),
        "",
        pd.DataFrame(wild_rows).to_markdown(index=False, floatfmt=".3f"),
        "",
        "## Leave-one-family-out: auc_unseen_<family> (clean) ",
        "",
        unseen.to_markdown(floatfmt=".4f") if not unseen.empty else "(disabled)",
        "",
        (
            "## Leave-one-family-out: tpr_unseen_wild_<family> (worst gated condition, the held-out family's "
            "samples called fake at the leave-one-out model's own threshold)"
        ),
        "",
        unseen_wild.to_markdown(floatfmt=".3f") if not unseen_wild.empty else "(disabled)",
        "",
        "## Figures",
        "",
    ] + [f"![{p.stem}]({p.name})" for p in figures]
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
    resumed: bool = False  # registered by an interrupted run with the same inputs, gated now


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

    _, spliced_version = run_build_spliced(cfg)
    version = versioning.data_version(cfg)
    data = prepare_eval_data(cfg)
    known = set(data.train.families) - {"real"}
    for family in without:
        if family not in known:
            raise BadInputError(
                f"--without {family}: no such generator family in data/fakes ({', '.join(sorted(known))})"
            )
        data.train = without_family(data.train, family)
        data.val_mix, data.val_groups = data.val_mix_without(family)
    tracking.setup(cfg)
    # the champion: the start of an incremental candidate (not one trained without a family: its
    # weights know that family) and, after training, the baseline judged on the candidate's data
    found = load_champion(hardware.resolve(cfg.device)) if gate else None
    start = found[1] if found and cfg.detect.cnn.warm_start and not without else None
    results: dict[str, FamilyResult] = {}
    for family in detector_families.selected(cfg.detect.families):
        started = time.perf_counter()
        det = fit_detector(cfg, family, data.train, data.val_mix, data.val_groups, progress, start=start)
        seconds = time.perf_counter() - started
        metrics, p = evaluate_detector(cfg, det, data)
        metrics.update(train_seconds=seconds, images_per_second=_images_per_second(det, data.test.images))
        metrics.update(localize(cfg, det))
        results[family] = FamilyResult(family, det, metrics, p, seconds)
    winner = max(results, key=lambda f: _rank(results[f].metrics))
    judge = _judge(results, winner)
    if cfg.detect.leave_one_out:  # the served family's generalization (the judge's is not served)
        result = results[winner]
        loo, result.loo_trained_on = leave_one_out(cfg, winner, data, progress)
        result.metrics.update(loo)
        result.unseen = {k.removeprefix("auc_unseen_"): v for k, v in loo.items() if k.startswith("auc_unseen_")}
    # the champion judged on exactly the candidate's data, before anything is registered
    champion = evaluate_champion(cfg, data, found) if found else None
    new_families = set(result.unseen) - champion.families if champion and cfg.detect.leave_one_out else set()
    if cfg.detect.leave_one_out:
        summarize_unseen(result.metrics, new_families)
    report, figures = _report(cfg, results, data.test, winner)
    summary = DetectorSummary(results, winner, report, fakes_version, spliced_version)
    for family, r in results.items():
        with tracking.start_run(cfg, DETECTOR_EXPERIMENT, f"detector-{family}", version, flow_run_id) as run:
            mlflow.set_tags({"fakes_version": fakes_version, "spliced_version": spliced_version})
            if generators:
                mlflow.log_dict(generators, "generators.json")
            mlflow.log_params(
                {
                    "family": family,
                    "trained_on": ",".join(r.detector.trained_on),
                    "trained_without": ",".join(without) or "none",
                    "warm_start_from": found[0] if hasattr(r.detector, "started_from") else "none",
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
            if champion and family == winner:
                mlflow.log_dict(
                    {
                        "champion_version": champion.version,
                        "metrics": champion.metrics.finite(),
                        "missing": champion.metrics.missing,
                        "new_families": sorted(new_families),
                    },
                    "champion_today.json",
                )
            tracking.log_artifacts([report, *figures], "report")
            info = log_detector(r.detector, "detector", data.test.images[:2])
            role = {winner: DETECTOR_MODEL, judge: JUDGE_MODEL}.get(family)
            if role is None:  # neither winner nor judge: tracked and logged, not registered
                continue
            tags = {
                "data_version": version,
                "fakes_version": fakes_version,
                "family": family,
                "threshold": f"{r.detector.threshold:.6f}",
                "map_threshold": f"{r.detector.map_threshold:.6f}",
                "pixel_ap": f"{r.metrics['pixel_ap']:.4f}",
                "iou": f"{r.metrics['iou']:.4f}",
                "run_id": run.info.run_id,
                "auc_unseen_min": f"{r.metrics.get('auc_unseen_min', float('nan')):.4f}",
            }
            if stage_key and not without:
                tags[STAGE_KEY] = stage_key
            mv = registry.register(info.model_uri, role, tags)
            if role == DETECTOR_MODEL:
                summary.detector_version = mv.version
            else:
                summary.judge_version = mv.version
    faults.reached("detectors:registered")
    if gate and summary.detector_version:
        _gate_and_watch(cfg, summary, champion, version)
    return summary


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
