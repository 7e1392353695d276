"""Which detector recipe is served, and what does it catch of families it never saw?

On a project whose fakes are sampled (after `gandefect run`), this trains the winner's family
(the CNN) with the served recipe under each `--variant` (settings of `detect.cnn`, and
`aligned=off` to train without the aligned sets, `bank=off` without the component bank and
`bank=N` with N reconstructions of each component kind made here, `gandefect.detect.components`),
calibrates it as the detectors stage does,
and prints side by side: the served threshold, the worst real false-positive share over the
gated conditions, and per generator the share of its test samples called fake at that
threshold under the worst gated condition. With `--hold-out`, each variant is also retrained
without each named generator family (its aligned sets too), with the same served recipe, and
the held-out family's share caught on PNG and under the worst gated condition is printed.

    .venv/bin/python bench/detector_recipes.py --variant balance=image --variant balance=family
    .venv/bin/python bench/detector_recipes.py --variant epochs=6 --hold-out dcgan diffusion
    .venv/bin/python bench/detector_recipes.py --held-out-only --hold-out dcgan \
        --variant precision=fp32,seed=0 --variant precision=bf16,seed=0 --variant precision=fp32,seed=1 ...
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from gandefect.config import load_config
from gandefect.data.datasets import to_tensor, to_uint8
from gandefect.detect import components
from gandefect.detect.common import Labeled
from gandefect.evaluate.detection import auc
from gandefect.stages import detectors as stage


def _parse(spec: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


def _without_aligned(train: Labeled) -> Labeled:
    return train.subset(~np.char.endswith(train.generators.astype(str), stage.ALIGNED))


def _with_bank(train: Labeled, per_kind: int, steps: int, seed: int) -> Labeled:
    """`train` plus the component bank's reconstructions of its real images (family `components`)."""
    real = train.images[train.labels == 0]
    made = {k: to_uint8(v) for k, v in components.bank(to_tensor(real), per_kind, steps, seed).items()}
    if not made:
        return train
    names = np.concatenate([[f"{stage.COMPONENT}{k}"] * len(v) for k, v in made.items()])
    return Labeled(
        np.concatenate([train.images, *made.values()]),
        np.r_[train.labels, np.ones(len(names), int)],
        np.r_[train.generators, names],
        np.r_[train.families, [components.FAMILY] * len(names)].astype(object),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument(
        "--variant",
        action="append",
        default=None,
        help="comma-separated detect.cnn settings, seed=N (the detector's seed), precision=fp32|bf16|auto, aligned=off (without the aligned sets) bank=off (without the component bank) and bank=N (N reconstructions per component kind, made here); repeat to compare (default: the config's)",
    )
    ap.add_argument("--hold-out", nargs="*", default=[], help="generator families to hold out, one model each")
    ap.add_argument("--held-out-only", action="store_true", help="skip the served model; train the held-out ones alone")
    args = ap.parse_args()
    base = load_config(args.params, args.profile)
    t0 = time.perf_counter()
    data = stage.prepare_eval_data(base)
    print(f"evaluation data built in {time.perf_counter() - t0:.0f} s", flush=True)
    gated = base.detect.wild.gated
    served_rows, held_rows = {}, []
    for spec in args.variant or [""]:
        settings = _parse(spec)
        aligned = settings.pop("aligned", "on") != "off"
        bank = str(settings.pop("bank", "as sampled"))
        seed = int(settings.pop("seed", base.seed))
        precision = str(settings.pop("precision", base.precision))
        cfg = base.model_copy(
            update={
                "seed": seed,
                "precision": precision,
                "detect": base.detect.model_copy(update={"cnn": base.detect.cnn.model_copy(update=settings)}),
            }
        )
        train = data.train if aligned else _without_aligned(data.train)
        if bank == "off":
            train = train.subset(train.families != components.FAMILY)
        elif bank.isdigit():
            train = _with_bank(
                train.subset(train.families != components.FAMILY),
                int(bank),
                base.detect.component_steps,
                base.seed + 31,
            )
        if not args.held_out_only:
            t0 = time.perf_counter()
            det = stage.fit_detector(cfg, "cnn", train, data.val_mix, data.val_groups)
            seconds = time.perf_counter() - t0
            metrics, _ = stage.evaluate_detector(cfg, det, data)
            row = {
                "threshold": det.threshold,
                "fpr_real_max": metrics.get("fpr_real_max"),
                "tpr_wild_min": metrics.get("tpr_wild_min"),
                "train_s": seconds,
            }
            row.update({g: metrics.get(f"tpr_fake_wild_{g}") for g in data.generators if "-epoch" not in g})
            served_rows[spec or "config"] = row
            print(pd.Series(row, name=spec or "config").to_string(float_format="%.3f"), flush=True)
        for held in args.hold_out:
            keep = train.families != held  # its aligned sets too; the bank is recipe and stays
            det = stage.fit_detector(cfg, "cnn", train.subset(keep), *data.val_mix_without(held))
            mine = data.test.families == held
            real = data.test.labels == 0
            fake_p = {c: det.score(data.wild_test.inputs[c][mine]) for c in gated}
            real_p = {c: det.score(x[real]) for c, x in data.wild_test.inputs.items()}  # each condition scored once
            scores = {c: p >= det.threshold for c, p in fake_p.items()}
            called = {c: float(v.mean()) for c, v in scores.items()}
            auc_png = auc(np.r_[np.zeros(real.sum()), np.ones(mine.sum())], np.r_[real_p["png"], fake_p["png"]])
            fpr = max(float((real_p[c] >= det.threshold).mean()) for c in gated)
            ungated = {c: float((p >= det.threshold).mean()) for c, p in real_p.items() if c not in gated}
            names = data.test.generators[mine]
            worst = min(called, key=called.get)
            for g in np.unique(names):  # which of the family's members it misses
                print(
                    f"  {g}: png {scores['png'][names == g].mean():.3f}, {worst} {scores[worst][names == g].mean():.3f}"
                )
            held_rows.append(
                {
                    "variant": spec or "config",
                    "held_out": held,
                    "auc_png": auc_png,
                    "caught_png": called["png"],
                    "caught_worst": min(called.values()),
                    "worst_condition": min(called, key=called.get),
                    "threshold": det.threshold,
                    "fpr_real_max": fpr,
                    **{f"fpr_{c}": v for c, v in ungated.items()},
                }
            )
            print(pd.DataFrame(held_rows[-1:]).to_string(index=False, float_format="%.3f"), flush=True)
    if served_rows:
        print(
            "\nserved model, tpr_fake_wild per generator (worst gated condition):\n"
            + pd.DataFrame(served_rows).to_string(float_format="%.3f")
        )
    if held_rows:
        print(
            "\nheld-out families, served recipe:\n"
            + pd.DataFrame(held_rows).to_string(index=False, float_format="%.3f")
        )


if __name__ == "__main__":
    main()
