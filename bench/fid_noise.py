"""How much a zoo member's FID moves with numerics and seeds alone, its recipe unchanged.

Inside a trained project (its registered feature net and splits), trains one member exactly
as the flow's trainer does, once per SEED:THREADS given, and prints the FID, FID ratio and
class entropy ratio of each. The same seed on one thread twice gives identical figures;
comparing threads and seeds shows the noise any "within x % of before" check must allow.

    cd <a trained project> && <checkout>/.venv/bin/python <checkout>/bench/fid_noise.py resizegan 1234:1 1234:2 1:2 2:2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gandefect.config import load_config
from gandefect.data.datasets import load_split
from gandefect.evaluate.generators import generator_metrics
from gandefect.gan import families as family_registry
from gandefect.gan import losses as loss_registry
from gandefect.gan.trainer import GANTrainer, TrainSettings, VAETrainer
from gandefect.lifecycle import versioning
from gandefect.lifecycle.zoo import ensure_feature_net
from gandefect.stages.gans import _samples, model_config, untrained_metrics


def trainer_for(cfg, name: str, seed: int):
    """The flow's trainer of zoo member `name` (stages.gans.train_gan), without tracking."""
    family = family_registry.FAMILIES.get(name)
    early = () if family else tuple(cfg.gan.early_epochs)
    settings = TrainSettings(cfg.gan.steps_for(name), cfg.gan.batch_size, seed, early, 10**9)
    if family and family.kind == "vae":
        torch.manual_seed(seed)
        return VAETrainer(family_registry.VAE(model_config(cfg)), settings, family.lr, family.beta)
    if family:
        return GANTrainer(
            loss_registry.get(family.loss),
            model_config(cfg),
            settings,
            None,
            None,
            family.generator,
            family.discriminator,
        )
    return GANTrainer(loss_registry.get(name), model_config(cfg), settings)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("member", help="a loss or generator family of the zoo")
    ap.add_argument("runs", nargs="+", help="SEED:THREADS, one training each")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    args = ap.parse_args()
    cfg = load_config(args.params, args.profile)
    train, test = load_split(cfg.real_dir, "train"), load_split(cfg.real_dir, "test")
    net, _ = ensure_feature_net(cfg, train, test, versioning.data_version(cfg))
    base = untrained_metrics(cfg, net, test)
    fids = []
    for run in args.runs:
        seed, threads = (int(x) for x in run.split(":"))
        torch.set_num_threads(threads)
        trainer = trainer_for(cfg, args.member, seed)
        started = time.perf_counter()
        trainer.fit(train.images)
        seconds = time.perf_counter() - started
        m = generator_metrics(net, test.images, _samples(trainer.G, cfg.gan.eval_samples, seed + 1))
        fids.append(m["fid"])
        print(
            f"{args.member} seed {seed} on {threads} thread(s): FID {m['fid']:.3f}  ratio {m['fid'] / base['fid']:.4f}  "
            f"class entropy ratio {m.get('class_entropy_ratio', float('nan')):.3f}  ({seconds:.0f} s)",
            flush=True,
        )
    if len(fids) > 1:
        print(
            f"FID {min(fids):.2f}-{max(fids):.2f}: max / min {max(fids) / min(fids):.2f}, "
            f"median {statistics.median(fids):.2f}"
        )


if __name__ == "__main__":
    main()
