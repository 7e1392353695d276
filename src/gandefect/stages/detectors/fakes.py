"""Fake sets: every registered generator sampled into data/fakes/ (with the component bank and the
aligned sets, training only), and folders of externally generated images ingested as generators."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from PIL import Image

from gandefect import hardware
from gandefect.config import Config
from gandefect.data import sources
from gandefect.data.datasets import load_pngs, to_tensor, to_uint8
from gandefect.data.fakes import EXTERNAL_SOURCE, MANIFEST, FakeSet, fakes_root, family_of, write_fake_set
from gandefect.data.snapshot import Progress, read_manifest
from gandefect.detect import components
from gandefect.gan import families as gan_families
from gandefect.gan.models import generate, noise
from gandefect.lifecycle import registry, versioning
from gandefect.lifecycle.zoo import registered_generators
from gandefect.names import FAKES_DIR, FAKES_STAGE


def _version_fakes(cfg: Config) -> str:
    if not (cfg.versioning.enabled and versioning.is_dvc_repo(cfg.root)):
        return versioning.UNVERSIONED
    return versioning.version_stage(cfg, FAKES_STAGE, FAKES_DIR)


def run_sample_fakes(cfg: Config, progress: Progress | None = None) -> tuple[list[FakeSet], str, dict[str, str]]:
    """Sample every registered generator with a fixed seed into data/fakes/<name>/.

    Returns the fake sets, their DVC version and the generator URIs they came from."""
    sets = []
    generators = registered_generators(cfg)
    made = _MadeFrom(cfg)
    for i, (name, uri) in enumerate(sorted(generators.items()), start=1):
        early = family_of(name) != name
        n = cfg.detect.fakes_per_early_generator if early else cfg.detect.fakes_per_generator
        family = gan_families.build_of(family_of(name))
        model = made.model_id(uri)
        aligned = f"{name}{ALIGNED}"
        device = hardware.resolve(cfg.device).type  # a GPU's sampling rounds differently
        key = made.key(model, device, n, cfg.seed + 17, family)
        aligned_key = made.key(
            model, device, made.real_train(), cfg.detect.aligned_per_generator, ALIGNED_STRENGTHS, cfg.seed
        )
        reused = made.reuse(name, family, key)
        # the diffusion members refine real images (`refine`): they have an aligned set too
        wants_aligned = cfg.detect.aligned_per_generator and not early and refines(name)
        reused_aligned = made.reuse(aligned, family, aligned_key) if wants_aligned else None
        if reused is not None and (not wants_aligned or reused_aligned is not None):
            sets += [reused] + ([reused_aligned] if reused_aligned else [])
        else:
            g = registry.load_torch_model(uri)
            with torch.no_grad(), hardware.placed(g, hardware.resolve(cfg.device)):
                arr = to_uint8(generate(g, noise(g, n, torch.Generator().manual_seed(cfg.seed + 17))))
                # the manifest names the generator, not its (run-specific) URI, so identical samples
                # give an identical DVC hash on every machine
                sets.append(
                    made.remember(write_fake_set(cfg, name, _pil(arr), f"generator:{name}", family=family), key)
                )
                if hasattr(g, "refine") and cfg.detect.aligned_per_generator and not early:
                    written = write_fake_set(
                        cfg, aligned, _pil(_aligned(cfg, g)), f"{ALIGNED_SOURCE}{name}", family=family, split="train"
                    )
                    sets.append(made.remember(written, aligned_key))
        if progress:
            progress("sampling fakes", i, len(generators))
    sets += _component_sets(cfg, progress)
    return sets, _version_fakes(cfg), generators


# Bumped when how a generator's set is sampled changes: a record written before is never trusted.
SAMPLING_LAYOUT = 1
MADE_FROM = ".gandefect/fakes"  # what each sampled set was made from (one JSON record per set)


class _MadeFrom:
    """The records of what each sampled fake set was made from (the generator's run, the number,
    the seeds, the image settings): a set whose record matches is reused as it is on disk instead
    of sampled again, so a rerun or a keep-up run after `ingest-fakes` samples only generators
    that changed. Sampling is seeded, so a reused set is the set sampling would write."""

    def __init__(self, cfg: Config):
        self.cfg, self.root = cfg, cfg.path(MADE_FROM)
        self._real_train: str | None = None

    def model_id(self, uri: str) -> str:
        """A generator by something unique: a registered version (`models:/<name>/<version>`) by
        the run that made it, since a wiped store numbers versions from 1 again; a logged model
        (`models:/<model id>`, the early generators) or a run's artifact by its own URI."""
        name, _, version = uri.removeprefix("models:/").partition("/")
        if uri.startswith("models:/") and version.isdigit():
            return f"{uri}@{mlflow.MlflowClient().get_model_version(name, version).run_id}"
        return uri

    def real_train(self) -> str:
        """A digest of the real train images (what the aligned sets refine)."""
        if self._real_train is None:
            real = read_manifest(self.cfg.real_dir)
            rows = sorted(real.loc[real["split"] == "train", "sha256"].astype(str))
            self._real_train = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        return self._real_train

    def key(self, *parts) -> str:
        d = self.cfg.data
        blob = json.dumps([SAMPLING_LAYOUT, d.image_size, d.mode, d.resize, d.splits, *parts], default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def reuse(self, name: str, family: str, key: str) -> FakeSet | None:
        """The set on disk when its record says it was made from `key` and it is whole, else None."""
        target = fakes_root(self.cfg) / name
        manifest = target / MANIFEST
        try:
            record = json.loads((self.root / f"{name}.json").read_text())
            if record != {"key": key, "manifest": hashlib.sha256(manifest.read_bytes()).hexdigest()}:
                return None
            count = len(pd.read_csv(manifest, dtype=str))
            if sum(1 for _ in (target / "images").iterdir()) != count:
                return None
        except (OSError, ValueError):
            return None
        return FakeSet(name, family, count, target)

    def remember(self, fake_set: FakeSet, key: str) -> FakeSet:
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = hashlib.sha256((fake_set.path / MANIFEST).read_bytes()).hexdigest()
        path = self.root / f"{fake_set.name}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"key": key, "manifest": manifest}))
        os.replace(tmp, path)
        return fake_set


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


def refines(name: str) -> bool:
    """Whether zoo member `name` can refine real images (a diffusion member): it gets an aligned set."""
    family = gan_families.FAMILIES.get(name)
    return family is not None and family.kind == "diffusion"


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
