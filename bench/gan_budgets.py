"""The least training budget at which each zoo member reaches its quality target.

Trains every member of the zoo exactly as the flow does (same seed, settings and data, the
registered feature net of a trained project) and measures its generator every `--every`
updates: FID ratio (FID / the untrained generator's FID), and in a labelled space the class
entropy ratio. Prints, per member, the first budget that meets the zoo's targets
(fid_ratio <= 0.10, class_entropy_ratio >= 0.9 where labels exist) and stays met at the next
measurements, beside its configured budget and the seconds each costs. Members meant to stay
defective (a source of crude fakes: they never meet the targets) are listed as such.

    cd <a trained project> && <checkout>/.venv/bin/python <checkout>/bench/gan_budgets.py [--every 100] [--max-factor 1.0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gandefect import hardware
from gandefect.config import load_config
from gandefect.data.datasets import load_split
from gandefect.evaluate.generators import generator_metrics
from gandefect.gan.trainer import Callback, TrainSettings
from gandefect.lifecycle import tracking, versioning
from gandefect.lifecycle.zoo import ensure_feature_net, zoo_members
from gandefect.stages.gans import (
    MAX_FID_RATIO,
    MIN_ENTROPY_RATIO,
    _samples,
    build_trainer,
    untrained_metrics,
)


class _Probe(Callback):
    """Measures the generator every `every` updates (sampling draws from its own generator, so the
    training run itself is the flow's)."""

    def __init__(self, every: int, measure):
        self.every, self.measure, self.trainer, self.rows, self.seen = every, measure, None, [], 0
        self.started = time.perf_counter()
        self.paused = 0.0

    def on_step(self, step, total):
        g = self.trainer.generator_steps
        if g and g % self.every == 0 and g != self.seen:
            self.seen = g
            t = time.perf_counter()
            trained = t - self.started - self.paused  # training time so far, measurements left out
            was = self.trainer.G.training
            self.trainer.G.eval()
            row = self.measure(self.trainer.G)
            self.trainer.G.train(was)
            self.paused += time.perf_counter() - t
            self.rows.append({"updates": g, "seconds": trained, **row})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--members", nargs="*", default=None)
    ap.add_argument("--max-factor", type=float, default=1.0, help="train up to this times the configured budget")
    ap.add_argument("--profile", default=None)
    args = ap.parse_args()
    cfg = load_config(Path("params.yaml"), args.profile)
    device = hardware.setup(cfg.device, cfg.deterministic, cfg.threads)
    tracking.setup(cfg)
    train, test = load_split(cfg.real_dir, "train"), load_split(cfg.real_dir, "test")
    net, _ = ensure_feature_net(cfg, train, test, versioning.data_version(cfg))
    base = untrained_metrics(cfg, net, test)
    labelled = net.labelled
    g = cfg.gan

    def measure(G):
        m = generator_metrics(net, test.images, _samples(G, g.eval_samples, cfg.seed + 1), device=device)
        out = {"fid_ratio": m["fid"] / base["fid"]}
        if labelled:
            out["entropy_ratio"] = m["class_entropy_ratio"]
        out["meets"] = out["fid_ratio"] <= MAX_FID_RATIO and out.get("entropy_ratio", 1.0) >= MIN_ENTROPY_RATIO
        return out

    print(
        f"targets: fid_ratio <= {MAX_FID_RATIO}" + (f", class_entropy_ratio >= {MIN_ENTROPY_RATIO}" if labelled else "")
    )
    print(f"{'member':<14} {'configured':>10} {'least meeting':>14} {'s (configured)':>15} {'s (least)':>10}  curve")
    for name in args.members or zoo_members(cfg):
        budget = g.steps_for(name)
        steps = int(budget * args.max_factor)
        settings = TrainSettings(
            steps,
            g.batch_size,
            cfg.seed,
            (),
            10**9,
            device=device,
            bf16=hardware.use_bf16(cfg.precision, device, on_cpu=False),
        )
        probe = _Probe(args.every, measure)
        trainer = build_trainer(cfg, name, settings, None, probe)
        probe.trainer = trainer
        trainer.fit(train.images)
        rows = probe.rows
        least = next((r for i, r in enumerate(rows) if all(x["meets"] for x in rows[i : i + 2])), None)
        at_budget = next((r for r in rows if r["updates"] == budget), rows[-1] if rows else None)
        curve = " ".join(
            f"{r['updates']}:{r['fid_ratio']:.3f}" + (f"/{r['entropy_ratio']:.2f}" if labelled else "") for r in rows
        )
        print(
            f"{name:<14} {budget:>10} {least['updates'] if least else 'never':>14} "
            f"{at_budget['seconds'] if at_budget else float('nan'):>15.1f} "
            f"{least['seconds'] if least else float('nan'):>10.1f}  {curve}",
            flush=True,
        )


if __name__ == "__main__":
    main()
