"""The data detectors are trained and judged on: the labeled splits, the validation mix and the
test set under every wild condition."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from gandefect.config import Config
from gandefect.data import conditions
from gandefect.data.datasets import load_pngs
from gandefect.data.fakes import EXTERNAL_SOURCE, fakes_root, read_fakes
from gandefect.data.snapshot import read_manifest
from gandefect.detect.common import Labeled
from gandefect.errors import BadInputError
from gandefect.evaluate import wild
from gandefect.stages.detectors.fakes import ALIGNED_SOURCE, COMPONENT_SOURCE
from gandefect.stages.detectors.fit import envelope_for


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


WILD_PROCESSES_FROM = 20_000  # images to encode (the default data's test set alone: 36,000 encodings)
WILD_CACHE = ".gandefect/wild"  # the project's wild encodings (gandefect.evaluate.wild.EncodingCache)


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
    # encoded once: the cache holds every image's encodings, so a rerun or a keep-up run encodes
    # only new images. Many to encode: in worker processes, one per core (spawn: see
    # leave_one_out); a few: on threads, since a worker takes seconds to start
    evaluated, envelope = conditions.evaluated(w), envelope_for(w.gated)
    cache = wild.EncodingCache(cfg.path(WILD_CACHE))
    todo = cache.to_encode(val, w.gated, cfg.data.resize) + cache.to_encode(test, evaluated, cfg.data.resize, envelope)
    with (
        ProcessPoolExecutor(min(len(evaluated), os.cpu_count() or 1), mp_context=multiprocessing.get_context("spawn"))
        if todo >= WILD_PROCESSES_FROM
        else contextlib.nullcontext()
    ) as pool:
        wild_val = wild.build(val, w.gated, cfg.data.resize, pool=pool, cache=cache)
        wild_test = wild.build(test, evaluated, cfg.data.resize, envelope, pool, cache)
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
