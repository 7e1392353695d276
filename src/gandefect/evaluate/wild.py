"""Verdicts "in the wild" at the served threshold (docs/architecture.md, "Detectors").

Every test image is sent through each condition as a client would send it (the bytes of
`gandefect.data.conditions`) and decoded by the service's upload path, one class at a time:
`fpr_real_<c>` is the share of real images called fake, `tpr_fake_<c>_<generator>` the share
of a generator's samples called fake, both at the detector's own threshold. `auc_<c>` (both
classes processed) is the ranking figure. `uncertain_real_<c>` is the share of real images
the service would answer `uncertain` for (outside the validated envelope).
"""

from __future__ import annotations

import io
import os
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

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
    data: Labeled, names: list[str], resize: str, envelope: Envelope | None = None, pool: Executor | None = None
) -> WildSet:
    """Encode every image under every condition and decode it as the service does; with an
    envelope, also whether each real image would be inside it (`uncertain_real_<c>`).

    One task per condition, on `pool` where given (a process pool: at 28x28 the per-image Python
    around Pillow holds the GIL, so threads barely overlap), else on one thread per core. A
    condition's bytes depend only on it and the seed, so the result is the same either way."""
    real = np.flatnonzero(data.labels == 0)
    args = [(data.images, real, name, resize, envelope) for name in names]
    if pool is not None:
        built = dict(zip(names, pool.map(_condition, *zip(*args))))
    else:
        with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1)) as threads:
            built = dict(zip(names, threads.map(lambda a: _condition(*a), args)))
    inputs = {name: pixels for name, (pixels, _) in built.items()}
    inside = {name: mask for name, (_, mask) in built.items()} if envelope is not None else {}
    return WildSet(data, inputs, inside)


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
