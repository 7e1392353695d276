"""Make a folder of images from a generator family the zoo lacks, for `gandefect ingest-fakes`.

Two families, neither adversarial nor convolutional, both fitted to the real train images:
  - `mixup` (the default): a nonparametric generator, as interpolation generators make
    images: each sample is a convex blend t * a + (1 - t) * b of two real train images (t
    uniform in [0.3, 0.7]). Its defects are two superimposed, half-bright digits on
    otherwise real pixels: no up-sampling trace at all. (Blending an image with its *nearest*
    neighbour instead gives images a detector cannot tell from real ones: a candidate trained
    on them lost 0.14 of AUC on every other generator and was refused by the gate.)
  - `ppca`: probabilistic PCA (Tipping & Bishop 1999), a linear Gaussian latent model fitted
    in closed form and sampled as mean + W z (the decoder's mean, as a VAE's samples are
    shown; `--noise-scale 1` adds the model's isotropic noise): blurry, ghosted digits.

    .venv/bin/python bench/external_family.py OUT_DIR [--family mixup|ppca] [--n 500] [--seed 7]
    .venv/bin/gandefect ingest-fakes OUT_DIR --generator mixup
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from gandefect.config import load_config
from gandefect.data.datasets import load_pngs
from gandefect.data.snapshot import read_manifest


def fit_ppca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Maximum-likelihood PPCA: (mean, W (k, d), noise variance) of rows x (n, d)."""
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s**2 / len(x)
    noise = float(var[k:].mean())
    w = vt[:k] * np.sqrt(np.maximum(var[:k] - noise, 0.0))[:, None]
    return mean, w, noise


def ppca(images: np.ndarray, n: int, rng: np.random.Generator, components: int, noise_scale: float) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    mean, w, noise = fit_ppca(flat, components)
    z = rng.standard_normal((n, components))
    samples = mean + z @ w + rng.standard_normal((n, mean.size)) * np.sqrt(noise) * noise_scale
    return samples.reshape(n, *images.shape[1:])


def mixup(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    a, b = rng.integers(len(images), size=(2, n))
    t = rng.uniform(0.3, 0.7, size=(n,) + (1,) * (images.ndim - 1))
    return t * images[a] + (1 - t) * images[b]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--family", choices=["mixup", "ppca"], default="mixup")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--components", type=int, default=24, help="ppca: latent dimensions")
    ap.add_argument("--noise-scale", type=float, default=0.0, help="ppca: times the fitted noise standard deviation")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    cfg = load_config(args.params)
    real = read_manifest(cfg.real_dir)
    images = load_pngs(real.loc[real["split"] == "train", "path"], cfg.real_dir).astype(np.float64)
    rng = np.random.default_rng(args.seed)
    if args.family == "ppca":
        samples = ppca(images, args.n, rng, args.components, args.noise_scale)
    else:
        samples = mixup(images, args.n, rng)
    samples = np.clip(np.round(samples), 0, 255).astype(np.uint8)
    args.out.mkdir(parents=True, exist_ok=True)
    mode = "L" if samples.ndim == 3 else "RGB"
    for i, s in enumerate(samples):
        Image.fromarray(s, mode).save(args.out / f"{args.family}-{i:04d}.png")
    print(f"{args.n} {args.family} samples in {args.out}")


if __name__ == "__main__":
    main()
