"""Do the labelled and the label-free feature spaces rank the GAN zoo the same way?

On a project whose zoo is trained (`gandefect run` on the default MNIST data), this measures
every registered GAN's FID in both spaces against the real test split, with the zoo's own
evaluation samples. An order only means something where it is larger than the figure's own
noise, so each space is measured with `--seeds` feature nets (the project's seed, then seed+1,
...; trained without labels in the contrastive space, registered beside the zoo's own net)
and `--bootstrap` resamples of the real and generated images per net. It prints:

- each GAN's FID per space (mean over nets), its spread, and its rank;
- Spearman's rank correlation of the two spaces' mean FIDs, and, as the ceiling that noise
  allows, the mean correlation between two nets of the *same* space;
- every pair of GANs: the share of draws (net x resample) in which each space puts the first
  one ahead. A space *orders* a pair when that share is >= 0.95 or <= 0.05, else the pair is
  a tie in that space. The verdict: the spaces agree on every pair both order, or they
  contradict each other on the pairs listed.

    .venv/bin/python bench/feature_spaces.py [--profile default] [--seeds 3] [--bootstrap 200]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from gandefect.config import load_config
from gandefect.data.datasets import load_split
from gandefect.evaluate.features import FeatureExtractor
from gandefect.evaluate.generators import _features, frechet_distance
from gandefect.gan import losses as loss_registry
from gandefect.lifecycle import registry, tracking, versioning
from gandefect.lifecycle.zoo import ensure_feature_net
from gandefect.names import generator_model

SPACES = ("labelled", "contrastive")
DECIDED = 0.95


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The zoo's FID (gandefect.evaluate.generators.frechet_distance) of two feature arrays."""
    return frechet_distance(torch.from_numpy(a), torch.from_numpy(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--samples", type=int, default=None, help="samples per GAN (default: gan.eval_samples)")
    ap.add_argument("--seeds", type=int, default=3, help="feature nets per space (default 3)")
    ap.add_argument("--bootstrap", type=int, default=200, help="resamples of real and generated images per net")
    args = ap.parse_args()
    cfg = load_config(args.params, args.profile)
    tracking.setup(cfg)
    version = versioning.data_version(cfg)
    train, test = load_split(cfg.real_dir, "train"), load_split(cfg.real_dir, "test")
    n = args.samples or cfg.gan.eval_samples
    fakes = {}
    for loss in loss_registry.selected(cfg.gan.losses):
        latest = registry.latest_version(generator_model(loss))
        if latest is None:
            print(f"{loss}: not registered, skipped")
            continue
        g = registry.load_torch_model(f"models:/{generator_model(loss)}/{latest.version}").eval()
        with torch.no_grad():
            fakes[loss] = g.sample(n, torch.Generator().manual_seed(cfg.seed + 1))  # the zoo's own evaluation samples
    gans = list(fakes)
    rng = np.random.default_rng(cfg.seed)
    draws = {s: [] for s in SPACES}  # per space: arrays (bootstrap, gans), one per net
    point = {s: [] for s in SPACES}  # per space: the FIDs on all images, one row per net
    for space, k in itertools.product(SPACES, range(args.seeds)):
        started = time.perf_counter()
        net_cfg = cfg.model_copy(
            update={"seed": cfg.seed + k, "features": cfg.features.model_copy(update={"space": space})}
        )
        net, quality = ensure_feature_net(net_cfg, train, test, version)
        extractor = FeatureExtractor(net)
        real = _features(extractor, test.images).double().numpy()
        feats = {g: _features(extractor, fakes[g]).double().numpy() for g in gans}
        point[space].append([frechet(real, feats[g]) for g in gans])
        boot = np.empty((args.bootstrap, len(gans)))
        for b in range(args.bootstrap):
            r = real[rng.integers(0, len(real), len(real))]
            boot[b] = [frechet(r, feats[g][rng.integers(0, len(feats[g]), len(feats[g]))]) for g in gans]
        draws[space].append(boot)
        print(
            f"{space} net {k + 1}/{args.seeds} (seed {net_cfg.seed}): label accuracy {quality:.4f} "
            f"({'test' if space == 'labelled' else 'nearest neighbour'}), {time.perf_counter() - started:.0f} s",
            flush=True,
        )

    pooled = {s: np.concatenate(draws[s]) for s in SPACES}  # every net's resamples, one row per draw
    table = pd.DataFrame({"gan": gans})
    for space in SPACES:
        per_net = np.array(point[space])
        allb = pooled[space]
        table[f"fid_{space}"] = per_net.mean(0)
        table[f"spread_{space}"] = [f"{lo:.2f}-{hi:.2f}" for lo, hi in np.percentile(allb, [2.5, 97.5], axis=0).T]
        table[f"rank_{space}"] = table[f"fid_{space}"].rank().astype(int)
    print("\nFID per space: mean over the nets on all images; spread: 2.5-97.5 % over nets x resamples\n")
    print(table.to_markdown(index=False, floatfmt=".3f"))
    rho = spearmanr(table["fid_labelled"], table["fid_contrastive"]).statistic
    print(f"\nSpearman rank correlation of the two spaces' mean FIDs over {len(gans)} GANs: {rho:.3f}")
    for space in SPACES:
        nets = point[space]
        within = [spearmanr(a, b).statistic for a, b in itertools.combinations(nets, 2)]
        if within:
            print(f"  between two {space} nets (noise ceiling): mean {np.mean(within):.3f}, min {np.min(within):.3f}")

    rows, contradictions, both = [], [], 0
    for i, j in itertools.combinations(range(len(gans)), 2):
        share = {s: float((pooled[s][:, i] < pooled[s][:, j]).mean()) for s in SPACES}
        order = {
            s: (gans[i] if p >= DECIDED else gans[j]) if (p >= DECIDED or p <= 1 - DECIDED) else None
            for s, p in share.items()
        }
        if all(order.values()):
            both += 1
            verdict = "agree" if order["labelled"] == order["contrastive"] else "CONTRADICT"
            if verdict == "CONTRADICT":
                contradictions.append(f"{gans[i]}/{gans[j]}")
        else:
            verdict = "tie in " + " and ".join(s for s in SPACES if order[s] is None)
        rows.append(
            {
                "pair": f"{gans[i]} vs {gans[j]}",
                **{f"P(first better) {s}": share[s] for s in SPACES},
                **{f"ahead {s}": order[s] or "tie" for s in SPACES},
                "verdict": verdict,
            }
        )
    print("\nEvery pair (P: share of draws with the first GAN's FID lower):\n")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".2f"))
    print(
        f"\n{both} of {len(rows)} pairs are ordered by both spaces: "
        + (
            "the spaces agree on all of them."
            if not contradictions
            else f"they contradict each other on {len(contradictions)}: {', '.join(contradictions)}."
        )
    )


if __name__ == "__main__":
    main()
