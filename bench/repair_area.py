"""Where does the served detector mark defects? The measurement behind `repair.local_max_area`.

On a project after `gandefect run` (any profile), the served detector's defect mask (its map at
the map threshold, dilated as the repair loop dilates it) as a share of the image, quantiles over
the images it calls generated:
- the spliced test images (a real image with one generated region): the true region's share and
  what the detector marks. A local defect looks like this; the limit must sit above it;
- `--samples` samples of every final generator: the families it marks as a whole sit above it.

It prints the smallest multiple of 0.05 above the spliced images' 99th percentile, and what
that limit would refuse per generator, beside the configured `repair.local_max_area`.

    .venv/bin/python bench/repair_area.py --profile rgb64
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd

from gandefect import hardware
from gandefect.config import load_config
from gandefect.data.spliced import load_spliced
from gandefect.lifecycle.served import load_served_detector
from gandefect.lifecycle.zoo import registered_generators, sample_generator
from gandefect.repair.pipeline import marked_area

QUANTILES = [0.05, 0.25, 0.5, 0.75, 0.95, 0.99]


def marked(detector, images: np.ndarray, dilate: int) -> tuple[np.ndarray, np.ndarray]:
    """(share of each image the detector marks, whether it calls the image generated)."""
    return marked_area(detector, detector.defect_map(images), dilate), detector.score(images) >= detector.threshold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--samples", type=int, default=300, help="samples per generator")
    args = ap.parse_args()
    cfg = load_config(args.params, args.profile)
    hardware.setup(cfg.device, cfg.deterministic, cfg.threads)
    detector = load_served_detector(cfg)
    dilate = cfg.spliced.dilate

    images, masks, _ = load_spliced(cfg, "test")
    area, flagged = marked(detector, images, dilate)
    rows = {"spliced test, true region": masks.mean(axis=(1, 2)), "spliced test, flagged, marked": area[flagged]}
    generators = sorted(g for g in registered_generators(cfg) if "-epoch" not in g)
    for g in generators:
        a, f = marked(detector, sample_generator(cfg, g, args.samples, cfg.seed + 29), dilate)
        rows[g] = a[f]
        print(
            f"{g}: {f.mean():.0%} called generated, median marked {np.median(a[f]) if f.any() else float('nan'):.2f}",
            flush=True,
        )
    table = pd.DataFrame(
        {k: (np.quantile(v, QUANTILES) if len(v) else [np.nan] * len(QUANTILES)) for k, v in rows.items()},
        index=[f"{q:.0%}" for q in QUANTILES],
    ).T
    table["n"] = [len(v) for v in rows.values()]
    print(
        f"\nmarked share of the image, over the images called generated (threshold {detector.threshold:.3f}, "
        f"map threshold {getattr(detector, 'map_threshold', 0.5):.3f}, {flagged.mean():.0%} of "
        f"{len(images)} spliced test images called generated):\n{table.to_string(float_format='%.2f')}"
    )
    local = float(np.quantile(rows["spliced test, flagged, marked"], 0.99)) if flagged.any() else float("nan")
    suggested = math.floor(local / 0.05 + 1) * 0.05 if math.isfinite(local) else float("nan")
    print(
        f"\nspliced 99th percentile {local:.2f}: smallest limit above it {suggested:.2f}; "
        f"configured repair.local_max_area {cfg.repair.local_max_area:.2f}"
    )
    refused = pd.DataFrame(
        {
            f"refused at {lim:.2f}": {g: float(np.mean(rows[g] > lim)) if len(rows[g]) else np.nan for g in generators}
            for lim in sorted({suggested, cfg.repair.local_max_area})
            if math.isfinite(lim)
        }
    )
    print(
        "\nshare of each generator's flagged samples the rule would leave as generated as a whole:\n"
        + refused.to_string(float_format="%.2f")
    )


if __name__ == "__main__":
    main()
