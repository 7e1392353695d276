"""Do the labelled and the label-free feature spaces rank the GAN zoo the same way?

On a project whose zoo is trained (`gandefect run` on the default MNIST data), this measures
every registered GAN's FID, precision and recall in both spaces against the real test split,
with the same samples, and prints them side by side with Spearman's rank correlation of the
FIDs (1.0: the same order). The labelled net is the one the zoo was measured with (taken from
the registry); the contrastive one is trained here on the real train split, without labels,
with the project's `features` settings, and registered beside it.

    .venv/bin/python bench/feature_spaces.py [--params params.yaml] [--profile default]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from scipy.stats import spearmanr

from gandefect.config import load_config
from gandefect.data.datasets import load_split
from gandefect.evaluate.generators import generator_metrics
from gandefect.gan import losses as loss_registry
from gandefect.lifecycle import registry, tracking, versioning
from gandefect.names import generator_model
from gandefect.stages.gans import ensure_feature_net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--samples", type=int, default=None, help="samples per GAN (default: gan.eval_samples)")
    args = ap.parse_args()
    cfg = load_config(args.params, args.profile)
    tracking.setup(cfg)
    version = versioning.data_version(cfg)
    train, test = load_split(cfg.real_dir, "train"), load_split(cfg.real_dir, "test")
    nets = {}
    for space in ("labelled", "contrastive"):
        started = time.perf_counter()
        space_cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"space": space})})
        nets[space], quality = ensure_feature_net(space_cfg, train, test, version)
        print(f"{space} space: label accuracy {quality:.4f} ({'test' if space == 'labelled' else 'nearest neighbour'}),"
              f" {time.perf_counter() - started:.0f} s")
    n = args.samples or cfg.gan.eval_samples
    rows = []
    for loss in loss_registry.selected(cfg.gan.losses):
        latest = registry.latest_version(generator_model(loss))
        if latest is None:
            print(f"{loss}: not registered, skipped")
            continue
        g = registry.load_torch_model(f"models:/{generator_model(loss)}/{latest.version}").eval()
        with torch.no_grad():
            fake = g.sample(n, torch.Generator().manual_seed(cfg.seed + 1))  # the zoo's own evaluation samples
        row = {"gan": loss}
        for space, net in nets.items():
            m = generator_metrics(net, test.images, fake)
            row |= {f"fid_{space}": m["fid"], f"precision_{space}": m["precision"], f"recall_{space}": m["recall"]}
        rows.append(row)
    table = pd.DataFrame(rows)
    table["rank_labelled"] = table["fid_labelled"].rank().astype(int)
    table["rank_contrastive"] = table["fid_contrastive"].rank().astype(int)
    print(table.to_markdown(index=False, floatfmt=".3f"))
    rho = spearmanr(table["fid_labelled"], table["fid_contrastive"]).statistic
    print(f"Spearman rank correlation of the FIDs over {len(table)} GANs: {rho:.3f}")


if __name__ == "__main__":
    main()
