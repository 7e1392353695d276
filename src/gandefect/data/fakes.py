"""Fake sets: `data/fakes/<generator>/images/<sha256>.png` + `manifest.csv`, one folder per generator.

Samples go through exactly the encoding path of real images (gandefect.data.images) and are
split train/val/test in the order of their content hashes with the real images' fractions, so
a detector never sees a format, resize or split difference between the two classes, and
every split of a small set holds some of its samples.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from gandefect.config import Config
from gandefect.data.images import encode_png, pixel_sha256, splits_by_rank, to_model_image
from gandefect.errors import BadInputError

FAKES_DIR = "data/fakes"
MANIFEST = "manifest.csv"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


@dataclass
class FakeSet:
    name: str
    family: str  # how its generator is built: leave-one-family-out removes a whole family
    count: int
    path: Path


def family_of(name: str) -> str:
    """`hinge-epoch1` comes from generator `hinge`; a set's family is that generator's unless the
    sampling stage names how it is built (`write_fake_set`); external sets are their own family."""
    return re.sub(r"-epoch\d+$", "", name)


def fakes_root(cfg: Config) -> Path:
    return cfg.path(FAKES_DIR)


def write_fake_set(
    cfg: Config,
    name: str,
    images: Iterable[Image.Image],
    source: str,
    least: int = 1,
    family: str | None = None,
    split: str | None = None,
) -> FakeSet:
    """Replace data/fakes/<name>/ with these images, encoded like every real image; fewer than
    `least` distinct ones are refused and the old set stays. `family`: how the generator is built
    (default: the set's own generator, `family_of(name)`); `split`: one split for every image
    (a set made from real images of that split), else the fractions of the real ones."""
    family = family or family_of(name)
    if not NAME.match(name):
        raise BadInputError(f"generator name {name!r}: use letters, digits and . _ + - (at most 64)")
    d = cfg.data
    target = fakes_root(cfg) / name
    tmp = target.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    rows, seen = [], set()
    for i, im in enumerate(images):
        im = to_model_image(im, d.image_size, d.mode, d.resize)
        sha = pixel_sha256(im)
        if sha in seen:
            continue
        seen.add(sha)
        (tmp / "images" / f"{sha}.png").write_bytes(encode_png(im))
        rows.append(
            {
                "path": f"images/{sha}.png",
                "sha256": sha,
                "generator": name,
                "family": family,
                "source": source,
                "source_ref": str(i),
            }
        )
    splits = [split] * len(rows) if split else splits_by_rank([r["sha256"] for r in rows], d.splits)
    for row, chosen in zip(rows, splits):
        row["split"] = chosen
    if len(rows) < least:
        shutil.rmtree(tmp)
        raise BadInputError(
            f"{len(rows)} distinct image(s) for generator {name!r}: a family needs at least {least}, "
            "so that validation and test hold some of its samples; nothing was written"
        )
    pd.DataFrame(rows).sort_values("sha256").to_csv(tmp / MANIFEST, index=False, lineterminator="\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # the old set is replaced whole, never half-written
    return FakeSet(name, family, len(rows), target)


def read_fakes(cfg: Config) -> pd.DataFrame:
    """Every fake image: path (relative to data/fakes), generator, family, split."""
    frames = []
    root = fakes_root(cfg)
    for manifest in sorted(root.glob(f"*/{MANIFEST}")):
        m = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        m["path"] = manifest.parent.name + "/" + m["path"]
        frames.append(m)
    if not frames:
        return pd.DataFrame(columns=["path", "sha256", "generator", "family", "source", "source_ref", "split"])
    return pd.concat(frames, ignore_index=True)


EXTERNAL_SOURCE = "folder:"  # a set `gandefect ingest-fakes` brought from a folder


def external_digest(cfg: Config) -> str:
    """Content digest of the fake sets brought from folders (`gandefect ingest-fakes`): a new or
    changed one must retrain the detectors (the sets made from registered generators follow
    them, and are remade by the detectors stage)."""
    h = hashlib.sha256()
    for manifest in sorted(fakes_root(cfg).glob(f"*/{MANIFEST}")):
        m = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        if len(m) and m["source"].iloc[0].startswith(EXTERNAL_SOURCE):
            h.update(manifest.parent.name.encode() + b"\0" + manifest.read_bytes())
    return h.hexdigest()[:16]
