"""Every registered detector version of a project, at its served threshold and at another rule.

The served threshold (`detect.wild.fpr_target`) is the highest, over the gated conditions, of
the score that 2 % of the validation reals under that condition reach. This scores each
version again on today's val and test sets, and prints:

- each condition's 2 % point on val reals;
- at the served threshold, at the highest of the conditions' 2 % points estimated by the
  Harrell-Davis quantile (a weighted mean of every order statistic, less noisy than the one
  order statistic the served rule reads), and at the 2 % point of all gated val reals pooled: the share of
  each named generator's test samples called fake as PNG and under its worst gated
  condition, and the largest share of test reals called fake under any gated condition.

Run from a project's root:

    .venv/bin/python bench/threshold_rules.py [--generators pixelcnn lsgan ...]
"""

from __future__ import annotations

import argparse

import mlflow
import numpy as np
from scipy.stats.mstats import hdquantiles

from gandefect.config import load_config
from gandefect.detect.common import threshold_for_fpr
from gandefect.lifecycle import tracking
from gandefect.lifecycle.registry import load_detector
from gandefect.stages.detectors import prepare_eval_data


def point(scores: np.ndarray, target: float) -> float:
    """The score that `target` of `scores` reach, by the served rule itself (one group)."""
    return threshold_for_fpr(scores, np.zeros(len(scores)), np.zeros(len(scores)), target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generators", nargs="+", default=["lsgan", "resizegan", "rectflow", "hinge"])
    args = ap.parse_args()
    cfg = load_config("params.yaml")
    gated, target = cfg.detect.wild.gated, cfg.detect.wild.fpr_target
    data = prepare_eval_data(cfg)
    real = data.val_mix.labels == 0
    val_groups = data.val_groups[real]
    test = data.wild_test.data
    tracking.setup(cfg)
    client = mlflow.MlflowClient()
    versions = sorted(client.search_model_versions("name='gandefect-detector'"), key=lambda v: int(v.version))
    for v in versions:
        det = load_detector(f"models:/gandefect-detector/{v.version}")
        val = det.score(data.val_mix.images[real])
        points = {c: point(val[val_groups == c], target) for c in gated}
        pooled = point(val, target)
        smooth = max(float(hdquantiles(val[val_groups == c], prob=[1 - target])[0]) for c in gated)
        scores = {c: det.score(data.wild_test.inputs[c]) for c in gated}
        print(
            f"v{v.version}: served {det.threshold:.3f}, harrell-davis {smooth:.3f}, pooled {pooled:.3f}; "
            "2 % point per condition: " + " ".join(f"{c} {points[c]:.2f}" for c in gated)
        )
        for rule, threshold in (("served", det.threshold), ("harrell-davis", smooth), ("pooled", pooled)):
            shares = []
            for g in args.generators:
                mine = test.generators == g
                if mine.any():
                    per = {c: float((scores[c][mine] >= threshold).mean()) for c in gated}
                    shares.append(f"{g} {per['png']:.3f} / {min(per.values()):.3f}")
            fpr = max(float((scores[c][test.labels == 0] >= threshold).mean()) for c in gated)
            print(f"  {rule}: " + ", ".join(shares) + f"; test reals' worst share called fake {fpr:.4f}")


if __name__ == "__main__":  # the wild sets are encoded in spawned worker processes
    main()
