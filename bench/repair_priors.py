"""Which inpainter repairs best: the trained U-Net or the zoo's diffusion model as a prior?

On a project after `gandefect run`, this repairs with each inpainter, side by side in one run:
- the spliced test images inside their true masks (in-mask PSNR against the real original,
  beside biharmonic and the pull-push fill);
- `--samples` samples of each `--generator` through the served repair loop (detect -> mask ->
  inpaint), scored by FID after over before and by the judge's p_fake after over before, on
  every sample and on the samples the loop changed.

    .venv/bin/python bench/repair_priors.py --prior ddpm:steps=25 --prior ddpm:steps=25,strength=0.5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from gandefect import hardware
from gandefect.config import load_config
from gandefect.data.datasets import load_pngs, load_split, to_tensor
from gandefect.data.snapshot import read_manifest
from gandefect.data.spliced import load_spliced
from gandefect.evaluate.features import FeatureExtractor
from gandefect.evaluate.generators import fid
from gandefect.evaluate.repair import biharmonic, psnr_in_mask
from gandefect.lifecycle import registry, versioning
from gandefect.lifecycle.served import load_repairer, load_served_detector
from gandefect.lifecycle.zoo import ensure_feature_net, sample_generator
from gandefect.names import JUDGE_MODEL, generator_model
from gandefect.repair.pipeline import Repairer, pull_push, repair
from gandefect.repair.prior import PriorInpainter


def _prior(spec: str, cfg, device):
    """`unet` (the served repairer, whatever it is) or `ddpm[:steps=S,strength=s,resample=R,from=unet]` (from=unet: a
    partial walk starts from the U-Net's fill rather than the pull-push fill)."""
    name, _, rest = spec.partition(":")
    if name == "unet":
        return load_repairer(cfg)
    settings = dict(item.split("=") for item in filter(None, rest.split(",")))
    ddpm = registry.load_torch_model(registry.latest_uri(generator_model(name), "train-gans"))
    start = load_repairer(cfg).net if settings.get("from") == "unet" else None
    start = getattr(start, "start", None) or start  # a served repairer that already has a prior: its U-Net
    return Repairer(
        PriorInpainter(
            ddpm,
            start,
            int(settings.get("steps", 25)),
            float(settings.get("strength", 1.0)),
            int(settings.get("resample", 0)),
            cfg.seed,
        ),
        device,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument(
        "--prior", action="append", default=None, help="unet, or ddpm[:steps=S,strength=s,resample=R,from=unet]; repeat"
    )
    ap.add_argument("--generator", nargs="*", default=["hinge", "wgan-gp", "resizegan", "lsgan", "nonsaturating"])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--spliced", type=int, default=300, help="spliced test images")
    args = ap.parse_args()
    cfg = load_config(args.params, args.profile)
    device = hardware.setup(cfg.device, cfg.deterministic, cfg.threads)
    priors = {p: _prior(p, cfg, device) for p in (args.prior or ["unet", "ddpm:steps=25"])}

    images, masks, manifest = load_spliced(cfg, "test")
    images, masks, manifest = images[: args.spliced], masks[: args.spliced], manifest.iloc[: args.spliced]
    real = read_manifest(cfg.real_dir).set_index("sha256")
    original = load_pngs(real.loc[manifest["real_sha256"], "path"], cfg.real_dir, cfg.data.shape)
    spliced = {
        "biharmonic": psnr_in_mask(biharmonic(images, masks), original, masks),
        "pull-push fill": psnr_in_mask(pull_push(images, masks), original, masks),
    }
    seconds = {}
    for name, prior in priors.items():
        t0 = time.perf_counter()
        spliced[name] = psnr_in_mask(prior.inpaint(images, masks), original, masks)
        seconds[name] = (time.perf_counter() - t0) / len(images) * 1000
        print(f"{name}: in-mask PSNR {spliced[name]:.2f} dB, {seconds[name]:.1f} ms/image", flush=True)
    print(
        f"\nin-mask PSNR on {len(images)} spliced test images (dB):\n"
        + pd.Series(spliced).to_string(float_format="%.2f")
    )

    detector = load_served_detector(cfg)
    judge = registry.load_detector(registry.latest_uri(JUDGE_MODEL, "train-detectors"), device)
    train, test = load_split(cfg.real_dir, "train"), load_split(cfg.real_dir, "test")
    net, _ = ensure_feature_net(cfg, train, test, versioning.data_version(cfg))
    extractor = FeatureExtractor(net).to(device)
    r = cfg.repair
    rows = []
    for g in args.generator:
        x = sample_generator(cfg, g, args.samples, cfg.seed + 29)
        f_before, j_before = fid(extractor, test.images, to_tensor(x)), judge.score(x)
        for name, prior in priors.items():
            t0 = time.perf_counter()
            res = repair(x, detector, prior, r.iterations, r.max_area, cfg.spliced.dilate, local_area=r.local_max_area)
            changed = res.iterations > 0
            j_after = judge.score(res.images)
            rows.append(
                {
                    "generator": g,
                    "prior": name,
                    "fid_ratio": fid(extractor, test.images, to_tensor(res.images)) / f_before,
                    "judge_ratio": j_after.mean() / max(j_before.mean(), 1e-12),
                    "judge_ratio_changed": j_after[changed].mean() / max(j_before[changed].mean(), 1e-12)
                    if changed.any()
                    else np.nan,
                    "changed": changed.mean(),
                    "mask_area": res.masks.mean(),
                    "s": time.perf_counter() - t0,
                }
            )
            print(
                pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.3f", header=len(rows) == 1), flush=True
            )
    table = pd.DataFrame(rows)
    print(
        "\nrepair loop, per generator (FID and judge p_fake after over before):\n"
        + table.pivot(
            index="generator", columns="prior", values=["fid_ratio", "judge_ratio_changed", "changed"]
        ).to_string(float_format="%.3f")
    )


if __name__ == "__main__":
    main()
