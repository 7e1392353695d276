"""What does a detector need to catch a generator family it never saw?

On a project whose fakes are sampled (after `gandefect run` or `train-gans` + `sample-fakes`),
this retrains the winner's family (the CNN) without one generator family, exactly as the
detectors stage does (`stages.detectors.leave_one_out`: capped training set, calibration on
the validation mix without the family, the served threshold), for every `--epochs` value,
`--balance` (what a batch is drawn over) and seed, and prints the held-out family's AUC against
real test images and the share of its test samples called fake on PNG and under the worst gated
wild condition, side by side. `--recipe served` trains the served model's recipe (its width and
epochs, all the data) instead of the lighter leave-one-out one; `--epochs` then sets its epochs.

    .venv/bin/python bench/loo_budget.py --profile rgb64 --family mlpgan --epochs 2 4 6 --seeds 1234 1 2
    .venv/bin/python bench/loo_budget.py --family diffusion --recipe served --epochs 6 --balance image family
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from gandefect.config import load_config
from gandefect.evaluate.detection import auc
from gandefect.stages import detectors as stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--family", required=True, help="the generator family held out")
    ap.add_argument("--detector", default="cnn", help="detector family retrained (default cnn)")
    ap.add_argument("--epochs", type=int, nargs="+", required=True, help="loo_epochs values to compare")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the config's)")
    ap.add_argument(
        "--balance",
        nargs="+",
        default=None,
        choices=["image", "family"],
        help="detect.cnn.balance values to compare (default: the config's)",
    )
    ap.add_argument("--recipe", choices=["loo", "served"], default="loo")
    args = ap.parse_args()
    base = load_config(args.params, args.profile)
    t0 = time.perf_counter()
    data = stage.prepare_eval_data(base)
    print(f"evaluation data built in {time.perf_counter() - t0:.0f} s", flush=True)
    test_families = data.test.families
    if args.family not in set(test_families):
        raise SystemExit(
            f"no generator family {args.family!r} in the test fakes; there are: "
            + ", ".join(sorted(set(test_families) - {"real"}))
        )
    rows = []
    served = args.recipe == "served"
    for seed in args.seeds or [base.seed]:
        for balance in args.balance or [base.detect.cnn.balance]:
            for epochs in args.epochs:
                cnn = base.detect.cnn.model_copy(
                    update={"epochs" if served else "loo_epochs": epochs, "balance": balance}
                )
                cfg = base.model_copy(update={"seed": seed, "detect": base.detect.model_copy(update={"cnn": cnn})})
                t0 = time.perf_counter()
                train = data.train if served else stage.capped(data.train, cfg.detect.loo_fakes_per_generator, cfg.seed)
                det = stage.fit_detector(
                    cfg,
                    args.detector,
                    stage.without_family(train, args.family),
                    *data.val_mix_without(args.family),
                    held_out=not served,
                )
                held = (test_families == "real") | (test_families == args.family)
                mine = test_families == args.family
                called = {
                    c: float((det.score(data.wild_test.inputs[c][mine]) >= det.threshold).mean())
                    for c in cfg.detect.wild.gated
                }
                rows.append(
                    {
                        "seed": seed,
                        "balance": balance,
                        "epochs": epochs,
                        f"auc_unseen_{args.family}": auc(data.test.labels[held], det.score(data.test.images[held])),
                        "caught_png": called["png"],
                        "caught_worst": min(called.values()),
                        "worst_condition": min(called, key=called.get),
                        "threshold": det.threshold,
                        "train_s": time.perf_counter() - t0,
                    }
                )
                print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.4f"), flush=True)
    table = pd.DataFrame(rows)
    print("\nall runs:\n" + table.to_string(index=False, float_format="%.4f"))
    print(
        "\nby balance and epochs (mean, min, max over seeds):\n"
        + table.groupby(["balance", "epochs"])[["caught_png", "caught_worst"]]
        .agg(["mean", "min", "max"])
        .to_string(float_format="%.3f")
    )


if __name__ == "__main__":
    main()
