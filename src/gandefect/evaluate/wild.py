"""Verdicts "in the wild" at the served threshold (docs/architecture.md, "Detectors").

Every test image is sent through each condition as a client would send it (the bytes of
`gandefect.data.conditions`) and decoded by the service's upload path, one class at a time:
`fpr_real_<c>` is the share of real images called fake, `tpr_fake_<c>_<generator>` the share
of a generator's samples called fake, both at the detector's own threshold. `auc_<c>` (both
classes processed) is the ranking figure. `uncertain_real_<c>` is the share of real images
the service would answer `uncertain` for (outside the validated envelope).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from gandefect.data import conditions
from gandefect.data.history import Envelope, read_history
from gandefect.detect.common import Labeled
from gandefect.evaluate.detection import ece
from gandefect.evaluate.figures import Figures

WILD_SEED = 4242  # the noise condition's draws; fixed so HTTP and in-process runs see the same bytes


@dataclass
class WildSet:
    """One labelled set as the model sees it under each condition (same order as `data`)."""

    data: Labeled
    inputs: dict[str, np.ndarray]  # condition -> uint8 model inputs
    inside: dict[str, np.ndarray]  # condition -> inside the validated envelope (bool)


def _condition(
    images: np.ndarray, real: np.ndarray, name: str, resize: str, envelope: Envelope | None
) -> tuple[np.ndarray, np.ndarray]:
    """One condition: every image's client bytes decoded as the service does, and whether each
    real image is inside the envelope (a top-level function, so a worker process can run it)."""
    size, mode = images.shape[1], "L" if images.ndim == 3 else "RGB"
    files = conditions.client_bytes(images, name, WILD_SEED)
    pixels = np.stack([conditions.to_model_input(b, size, mode, resize) for b in files])
    inside = np.ones(len(files), bool)
    if envelope is not None:
        inside[real] = [read_history(Image.open(io.BytesIO(files[i])), size, envelope).inside for i in real]
    return pixels, inside


def build(
    data: Labeled,
    names: list[str],
    resize: str,
    envelope: Envelope | None = None,
    pool: Executor | None = None,
    cache: EncodingCache | None = None,
) -> WildSet:
    """Encode every image under every condition and decode it as the service does; with an
    envelope, also whether each real image would be inside it (`uncertain_real_<c>`).

    One task per condition, on `pool` where given (a process pool: at 28x28 the per-image Python
    around Pillow holds the GIL, so threads barely overlap), else on one thread per core. An
    image's bytes depend only on it, the condition and the seed, so the result is the same
    either way, and the same whether it came from `cache` (which then encodes only the images
    it has not seen) or not."""
    real = data.labels == 0
    digests = cache.digests(data.images) if cache is not None else None
    stored = {name: cache.read(name, resize, envelope, digests, real) for name in names} if cache else {}
    todo = {name: stored[name].missing if cache else np.arange(len(data.labels)) for name in names}
    args = [
        (data.images[todo[name]], np.flatnonzero(real[todo[name]]), name, resize, envelope)
        for name in names
        if len(todo[name])
    ]
    encoding = [a[2] for a in args]
    if pool is not None and args:
        built = dict(zip(encoding, pool.map(_condition, *zip(*args))))
    elif args:
        with ThreadPoolExecutor(max_workers=min(len(args), os.cpu_count() or 1)) as threads:
            built = dict(zip(encoding, threads.map(lambda a: _condition(*a), args)))
    else:
        built = {}
    inputs, inside = {}, {}
    for name in names:
        if cache is None:
            inputs[name], inside[name] = built[name]
            continue
        hit = stored[name]
        if name in built:
            hit.fill(todo[name], *built[name], real[todo[name]])
            cache.write(name, resize, envelope, digests, hit)
        inputs[name], inside[name] = hit.pixels, hit.inside != 0  # unknown (a generated image): inside
    return WildSet(data, inputs, inside if envelope is not None else {})


# Bumped when a condition's bytes or the service's decode change: a cache written before is never read.
ENCODING_LAYOUT = 1


@dataclass
class _Stored:
    """One condition's encodings of a set: its rows from the cache, and which rows are missing."""

    pixels: np.ndarray
    inside: np.ndarray  # int8: 1 inside the envelope, 0 outside, -1 not known (a real image needs it)
    missing: np.ndarray  # row indices to encode

    def fill(self, rows: np.ndarray, pixels: np.ndarray, inside: np.ndarray, real: np.ndarray) -> None:
        """Newly encoded rows; an envelope verdict is kept for real images only (the only ones it is computed for)."""
        if len(self.pixels) != len(self.inside):  # nothing came from the cache: the encodings give the shape
            self.pixels = np.zeros((len(self.inside), *pixels.shape[1:]), pixels.dtype)
        self.pixels[rows] = pixels
        self.inside[rows] = np.where(real, inside, -1)


@dataclass
class EncodingCache:
    """The wild encodings of every image a project has evaluated, per condition and image digest,
    in one file per condition (`<root>/<condition>-<key>.npz`, the key made of everything else
    an encoding depends on). A rerun, or a keep-up run after `ingest-fakes`, encodes only the
    images it has not seen; a file holds the images of the last set written."""

    root: Path
    _digested: tuple = field(
        default=(None, None), init=False, repr=False
    )  # the last image array digested and its digests (`to_encode`, then `build`)

    def digests(self, images: np.ndarray) -> np.ndarray:
        if self._digested[0] is not images:
            self._digested = (images, np.array([conditions.image_digest(im) for im in images], dtype=np.uint64))
        return self._digested[1]

    def path(self, name: str, resize: str, envelope: Envelope | None) -> Path:
        c = conditions.get(name)
        key = [ENCODING_LAYOUT, name, c.describe, c.jpeg_quality, c.shrink, c.detail, resize, WILD_SEED]
        key.append(envelope.to_dict() if envelope is not None else None)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.root / f"{name}-{digest}.npz"

    def read(
        self,
        name: str,
        resize: str,
        envelope: Envelope | None,
        digests: np.ndarray,
        real: np.ndarray,
        pixels: bool = True,
    ) -> _Stored:
        """The rows the cache holds for these images; the others (and real images whose envelope
        verdict it lacks) are `missing`. `pixels=False`: which are missing only."""
        n = len(digests)
        path = self.path(name, resize, envelope)
        try:
            return self._read(path, envelope, digests, real, pixels)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # none yet, or unreadable: encode afresh
            return _Stored(np.zeros((0,)), np.full(n, -1, np.int8), np.arange(n))

    @staticmethod
    def _read(path: Path, envelope: Envelope | None, digests: np.ndarray, real: np.ndarray, pixels: bool) -> _Stored:
        n = len(digests)
        with np.load(path) as f:
            known = {int(d): i for i, d in enumerate(f["digests"])}
            rows = np.array([known.get(int(d), -1) for d in digests], dtype=np.int64)
            found = rows >= 0
            inside = np.full(n, -1, np.int8)
            inside[found] = f["inside"][rows[found]]
            unknown = found & real & (inside < 0) if envelope is not None else np.zeros(n, bool)
            missing = np.flatnonzero(~found | unknown)
            if not pixels or not found.any():
                return _Stored(np.zeros((0,)), inside, missing)
            stored = f["pixels"]
            out = np.zeros((n, *stored.shape[1:]), stored.dtype)
            out[found] = stored[rows[found]]
        return _Stored(out, inside, missing)

    def to_encode(self, data: Labeled, names: list[str], resize: str, envelope: Envelope | None = None) -> int:
        """How many encodings `build` would make for this set (reads only the files' digests and verdicts)."""
        digests, real = self.digests(data.images), data.labels == 0
        return sum(len(self.read(name, resize, envelope, digests, real, pixels=False).missing) for name in names)

    def write(self, name: str, resize: str, envelope: Envelope | None, digests: np.ndarray, rows: _Stored) -> None:
        """Replace the condition's file with this set's encodings (written whole, then renamed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(name, resize, envelope)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, digests=digests, pixels=rows.pixels, inside=rows.inside)
        os.replace(tmp, path)


def verdict_metrics(
    p: np.ndarray,
    data: Labeled,
    threshold: float,
    condition: str,
    generators: list[str] | None = None,
    min_samples: int = 1,
) -> Figures:
    """fpr_real_<c>, tpr_fake_<c>_<generator> (each of `generators`, default those in `data`) and
    their worst case tpr_fake_<c>, auc_<c>."""
    called = p >= threshold
    real = data.labels == 0
    out = Figures(min_samples=min_samples)
    out.share(f"fpr_real_{condition}", called[real], "real test images")
    generators = sorted(set(data.generators[~real].tolist())) if generators is None else generators
    for g in generators:
        out.share(f"tpr_fake_{condition}_{g}", called[data.generators == g], f"test samples of {g}")
    if generators:
        out.worst(f"tpr_fake_{condition}", [f"tpr_fake_{condition}_{g}" for g in generators])
    out.auc(f"auc_{condition}", data.labels, p, "real test images", "generated test images")
    return out


def evaluate_wild(
    detector, wild: WildSet, names: list[str] | None = None, generators: list[str] | None = None, min_samples: int = 1
) -> Figures:
    """The in-the-wild figures of one detector."""
    metrics = Figures(min_samples=min_samples)
    real = wild.data.labels == 0
    for name in names or list(wild.inputs):
        p = detector.score(wild.inputs[name])
        metrics.update(verdict_metrics(p, wild.data, detector.threshold, name, generators, min_samples))
        if name in wild.inside:
            metrics.share(f"uncertain_real_{name}", ~wild.inside[name][real], "real test images")
        if name == "jpeg75" and metrics.enough(
            "ece_jpeg75", {"real test images": int(real.sum()), "generated test images": int((~real).sum())}
        ):
            metrics["ece_jpeg75"] = ece(p, wild.data.labels)
    return metrics


def summarize(metrics: Figures, gated: list[str], generators: list[str]) -> Figures:
    """Adds the worst cases over the gated conditions to `metrics`: fpr_real_max, and
    tpr_fake_wild_<generator> per generator (their min and mean over generators); returns it."""
    metrics.worst("fpr_real_max", [f"fpr_real_{c}" for c in gated], highest=True)
    for g in generators:
        metrics.worst(f"tpr_fake_wild_{g}", [f"tpr_fake_{c}_{g}" for c in gated])
    tprs = [f"tpr_fake_wild_{g}" for g in generators]
    if tprs:
        metrics.worst("tpr_wild_min", tprs)
        metrics.mean("tpr_wild_mean", tprs)
    return metrics
