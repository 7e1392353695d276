"""The real-image snapshot: `data/real/images/<sha256>.png`, `manifest.csv`, `snapshot.json`.

Ingest is additive and idempotent: an image is named by the hash of its pixels, its split
is a function of that hash, and a source whose contents have not changed is not read
again. Changing the encoding settings (size, mode, resize, splits) rebuilds the snapshot
from the sources it recorded.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from gandefect import faults
from gandefect.config import Config
from gandefect.data import sources as src
from gandefect.data.images import IMAGE_ERRORS, encode_png, pixel_sha256, split_for, to_model_image
from gandefect.errors import BadInputError

MANIFEST = "manifest.csv"
SNAPSHOT = "snapshot.json"
IMAGES = "images"
MANIFEST_COLUMNS = ["path", "sha256", "source", "source_ref", "label", "split"]
_DTYPES = {c: "string" for c in MANIFEST_COLUMNS}

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Quarantined:
    source: str
    ref: str
    reason: str


@dataclass
class IngestResult:
    added: int = 0
    duplicates: int = 0
    total: int = 0
    rebuilt: bool = False  # the encoding settings changed: rebuilt from the recorded sources
    replaced: bool = False  # --replace: a new snapshot of the requested sources only
    skipped_sources: list[str] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def settings_of(cfg: Config) -> dict:
    d = cfg.data
    return {"image_size": d.image_size, "mode": d.mode, "resize": d.resize, "splits": d.splits}


def read_manifest(real_dir: Path) -> pd.DataFrame:
    path = real_dir / MANIFEST
    if not path.exists():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    manifest = pd.read_csv(path, dtype=_DTYPES, keep_default_na=False)
    manifest["label"] = manifest["label"].replace("", pd.NA)
    return manifest


def read_snapshot_info(real_dir: Path) -> dict:
    path = real_dir / SNAPSHOT
    return json.loads(path.read_text()) if path.exists() else {}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


MIN_EVAL_IMAGES = 2  # a distance between two sets of images (FID) needs two images in each


def least_images(cfg: Config) -> dict[str, int]:
    """The fewest real images the flow can use: in all (the data suite's `validation.min_images`),
    in train (a GAN batch: `gan.batch_size`), and in val and test (the threshold is chosen on val and
    every figure judged on test: `gates.min_samples`, and at least MIN_EVAL_IMAGES)."""
    judged = max(cfg.gates.min_samples, MIN_EVAL_IMAGES)
    return {"in all": cfg.validation.min_images, "train": cfg.gan.batch_size, "val": judged, "test": judged}


def check_enough(cfg: Config, counts: dict[str, int], duplicates: int = 0) -> None:
    """A BadInputError naming what is short and the minimum, when `counts` (per split) fall below
    `least_images`."""
    have = {"in all": sum(counts.values()), **{s: counts.get(s, 0) for s in ("train", "val", "test")}}
    need = least_images(cfg)
    short = [f"{have[k]} {k} (needs {n})" for k, n in need.items() if have[k] < n]
    if not short:
        return
    repeats = f"; {duplicates} more were repeats of images already counted" if duplicates else ""
    raise BadInputError(
        f"too few distinct images for the flow: {', '.join(short)}. The snapshot would hold {have['in all']} "
        f"(train {have['train']}, val {have['val']}, test {have['test']}){repeats}. It needs at least {need['in all']} "
        f"distinct images (validation.min_images), {need['train']} in train (gan.batch_size) and {need['val']} in "
        f"each of val and test (gates.min_samples, at least {MIN_EVAL_IMAGES}); the splits are about {cfg.data.splits['train']:.0%} / "
        f"{cfg.data.splits['val']:.0%} / {cfg.data.splits['test']:.0%} of the images. Nothing was written or trained: "
        "add images (several --from folders at once) or lower those settings"
        + (" (e.g. --profile tiny, for a trial run)." if cfg.profile != "tiny" else ".")
    )


def _collect(source: src.Source, cfg: Config, known: set[str], progress: Progress | None):
    """Decode and encode every image of a source in memory; nothing is written yet."""
    rows, blobs, quarantined, duplicates, good = [], {}, [], 0, 0
    total = src.count(source)
    d = cfg.data
    for i, raw in enumerate(src.iter_images(source), start=1):
        if progress:
            progress(f"reading {source.name}", i, total)
        if raw.image is None:
            quarantined.append(Quarantined(source.name, raw.ref, raw.error or "unreadable"))
            continue
        try:
            image = to_model_image(raw.image, d.image_size, d.mode, d.resize)
        except IMAGE_ERRORS as exc:
            quarantined.append(Quarantined(source.name, raw.ref, f"{type(exc).__name__}: {exc}"))
            continue
        low, high = (
            image.getextrema()
            if d.mode == "L"
            else (min(e[0] for e in image.getextrema()), max(e[1] for e in image.getextrema()))
        )
        if low == high:  # the data suite would refuse the whole snapshot for it
            quarantined.append(
                Quarantined(
                    source.name,
                    raw.ref,
                    f"a single colour once it is {d.image_size}x"
                    f"{d.image_size} {d.mode}: it carries no signal to learn from",
                )
            )
            continue
        good += 1
        sha = pixel_sha256(image)
        if sha in known or sha in blobs:
            duplicates += 1
            continue
        blobs[sha] = encode_png(image)
        rows.append(
            {
                "path": f"{IMAGES}/{sha}.png",
                "sha256": sha,
                "source": source.name,
                "source_ref": raw.ref,
                "label": raw.label,
                "split": split_for(sha, d.splits),
            }
        )
    if good == 0:
        raise BadInputError(
            f"{source.location}: no usable images among {total} file(s); nothing was written"
            + (f" (first problem: {quarantined[0].ref}: {quarantined[0].reason})" if quarantined else "")
        )
    return rows, blobs, quarantined, duplicates


def _plan(
    info: dict, settings: dict, requested: list[src.Source], replace: bool, real_dir: Path, result: IngestResult
) -> tuple[pd.DataFrame, list[src.Source], dict, bool]:
    """(the manifest to add to, the sources to read, the sources recorded so far, whether the
    snapshot is rebuilt): rebuilt when replaced or when the image settings changed, re-reading the
    sources it was built from that are still there; else only new or changed sources are read."""
    recorded = {json.dumps(s["source"], sort_keys=True): s for s in info.get("sources", [])}
    rebuild = replace or (bool(info) and info.get("settings") != settings)
    if rebuild:
        result.rebuilt, result.replaced = not replace, replace
        carried = []
        if not replace:
            for s in recorded.values():
                rec = s["source"]
                if rec["kind"] in src.BUILT_IN or Path(rec["location"]).is_dir():
                    carried.append(src.Source(**rec))
        todo = carried + [s for s in requested if s.to_record() not in [c.to_record() for c in carried]]
        return pd.DataFrame(columns=MANIFEST_COLUMNS), todo, {}, True
    todo = []
    for s in requested:
        key = json.dumps(s.to_record(), sort_keys=True)
        if key in recorded and recorded[key]["fingerprint"] == src.fingerprint(s):
            result.skipped_sources.append(s.name)
        else:
            todo.append(s)
    return read_manifest(real_dir), todo, recorded, False


def _write_images(real_dir: Path, blobs: dict[str, bytes], progress: Progress | None) -> None:
    """Each new PNG written whole or not at all: a killed ingest leaves no half PNG."""
    (real_dir / IMAGES).mkdir(parents=True, exist_ok=True)
    for partial in (real_dir / IMAGES).glob("*.tmp"):  # left by an ingest that was killed mid-write
        partial.unlink()
    for i, (sha, blob) in enumerate(blobs.items(), start=1):
        target = real_dir / IMAGES / f"{sha}.png"
        if not target.exists():
            tmp = target.with_suffix(".png.tmp")
            tmp.write_bytes(blob)
            os.replace(tmp, target)
        if progress:
            progress("writing PNGs", i, len(blobs))


def ingest(
    cfg: Config,
    requested: list[src.Source],
    replace: bool = False,
    progress: Progress | None = None,
    enough_for_the_flow: bool = False,
) -> IngestResult:
    """Add the requested sources' images to the snapshot under cfg.real_dir; with
    `enough_for_the_flow`, a snapshot too small for the flow (`check_enough`) is refused before
    anything on disk changes."""
    real_dir = cfg.real_dir
    settings = settings_of(cfg)
    result = IngestResult()
    manifest, todo, recorded, rebuild = _plan(
        read_snapshot_info(real_dir), settings, requested, replace, real_dir, result
    )
    known = set(manifest["sha256"]) if len(manifest) else set()
    new_rows, new_blobs = [], {}
    for s in todo:
        rows, blobs, quarantined, duplicates = _collect(s, cfg, known | set(new_blobs), progress)
        new_rows += rows
        new_blobs.update(blobs)
        result.quarantined += quarantined
        result.duplicates += duplicates
        recorded[json.dumps(s.to_record(), sort_keys=True)] = {
            "source": s.to_record(),
            "fingerprint": src.fingerprint(s),
        }
    if enough_for_the_flow:
        check_enough(cfg, Counter([*manifest["split"], *(r["split"] for r in new_rows)]), result.duplicates)

    # Everything is decoded and checked; only now touch the snapshot on disk.
    _write_images(real_dir, new_blobs, progress)
    faults.reached("ingest:images-written")
    if new_rows:
        added = pd.DataFrame(new_rows, columns=MANIFEST_COLUMNS).astype(_DTYPES)
        manifest = added if manifest.empty else pd.concat([manifest.astype(_DTYPES), added], ignore_index=True)
    manifest = manifest.sort_values("sha256", kind="stable").reset_index(drop=True)
    if rebuild:
        keep = set(manifest["path"])
        for stale in (real_dir / IMAGES).glob("*.png"):
            if f"{IMAGES}/{stale.name}" not in keep:
                stale.unlink()
    if manifest.empty:
        raise BadInputError("the snapshot would be empty: ingest at least one readable image")
    _write_atomic(real_dir / MANIFEST, manifest.to_csv(index=False, lineterminator="\n"))
    counts = manifest["split"].value_counts().reindex(["train", "val", "test"], fill_value=0)
    result.counts = {k: int(v) for k, v in counts.items()}
    result.added = len(new_rows)
    result.total = len(manifest)
    snapshot = {
        "settings": settings,
        "sources": sorted(recorded.values(), key=lambda r: json.dumps(r["source"], sort_keys=True)),
        "images": result.total,
        "counts": result.counts,
    }
    _write_atomic(real_dir / SNAPSHOT, json.dumps(snapshot, indent=2, sort_keys=True) + "\n")
    return result


def image_table(real_dir: Path, progress: Progress | None = None) -> pd.DataFrame:
    """One row per manifest entry with what its file actually holds (for the data suite)."""
    manifest = read_manifest(real_dir)
    records = []
    for i, row in enumerate(manifest.itertuples(index=False), start=1):
        rec = {
            "path": row.path,
            "split": row.split,
            "label": row.label,
            "source": row.source,
            "manifest_sha256": row.sha256,
        }
        try:
            with Image.open(real_dir / row.path) as im:
                im.load()
                arr = np.asarray(im)
                rec.update(
                    width=im.width,
                    height=im.height,
                    mode=im.mode,
                    dtype=str(arr.dtype),
                    pixel_min=int(arr.min()),
                    pixel_max=int(arr.max()),
                    pixel_mean=float(arr.mean()),
                    pixel_std=float(arr.std()),
                    sha256=pixel_sha256(im),
                    readable=True,
                )
        except (FileNotFoundError, *IMAGE_ERRORS) as exc:
            rec.update(
                width=0,
                height=0,
                mode="",
                dtype="",
                pixel_min=0,
                pixel_max=0,
                pixel_mean=0.0,
                pixel_std=0.0,
                sha256=f"unreadable:{row.path}",
                readable=False,
                error=str(exc),
            )
        records.append(rec)
        if progress:
            progress("reading snapshot", i, len(manifest))
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    table["splits_with_same_pixels"] = table.groupby("sha256")["split"].transform("nunique")
    return table
