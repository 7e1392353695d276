"""Training the inpainting U-Net on real images with random masks.

Loss (Liu et al. 2018 weights for the L1 terms): hole_weight * L1(hole) + L1(known region)
+ adversarial_weight * the generator term of an adversarial loss from gandefect's loss
registry (default hinge), with a spectral-normalized patch discriminator that sees the
composite (prediction in the hole, input elsewhere) and the mask.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from gandefect.config import RepairConfig
from gandefect.data.datasets import to_tensor
from gandefect.data.spliced import MaskSpec, mask_pool
from gandefect.gan import losses
from gandefect.hardware import CPU
from gandefect.repair.model import InpaintUNet, PatchDiscriminator, UNetShape, composite


def train_repairer(
    images: np.ndarray,
    model_cfg: UNetShape,
    s: RepairConfig,
    seed: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    device: torch.device = CPU,
) -> InpaintUNet:
    """Train on uint8 real images (N, H, W[, 3]) with the training settings of `s` on `device`;
    returns the U-Net in eval mode, on the CPU."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    adv = losses.get(s.adversarial_loss)
    net, disc = InpaintUNet(model_cfg).to(device), PatchDiscriminator(model_cfg.channels, model_cfg.width).to(device)
    opt_g = torch.optim.Adam(net.parameters(), lr=s.lr, betas=(0.5, 0.999))
    opt_d = adv.optimizer.build(disc.parameters())
    x_all = to_tensor(images).to(device)
    pool = torch.from_numpy(
        mask_pool(rng, images.shape[1:3], MaskSpec(s.mask_min_area, s.mask_max_area), 4096)[:, None].astype(np.float32)
    ).to(device)
    steps = max(1, len(images) // s.batch_size)
    total = s.epochs * steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt_g, s.lr, total_steps=total)
    for epoch in range(s.epochs):
        order = torch.from_numpy(rng.permutation(len(images))).to(device)
        sums = {"l1_hole": 0.0, "l1_valid": 0.0, "g_adv": 0.0, "d_loss": 0.0}
        net.train()
        for i in range(steps):
            x = x_all[order[i * s.batch_size : (i + 1) * s.batch_size]]
            flip = torch.from_numpy(rng.random(len(x)) < 0.5)[:, None, None, None].to(device)
            x = torch.where(flip, x.flip(3), x)  # mirror augmentation
            m = pool[torch.from_numpy(rng.integers(0, len(pool), len(x))).to(device)]
            pred = net.inpaint(x, m)
            comp = composite(x, pred, m)
            if s.adversarial_weight > 0:
                for _ in range(adv.n_critic):
                    d = adv.discriminator_step(disc, opt_d, x, comp.detach(), m)["d_loss"]
                g_adv = adv.g_loss(disc(comp, m))
            else:
                d, g_adv = torch.zeros(()), torch.zeros(())
            hole = (m * (pred - x).abs()).sum() / m.sum().clamp(min=1) / x.shape[1]
            valid = ((1 - m) * (pred - x).abs()).sum() / (1 - m).sum().clamp(min=1) / x.shape[1]
            loss = s.hole_weight * hole + valid + s.adversarial_weight * g_adv
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            sched.step()
            for k, v in (("l1_hole", hole), ("l1_valid", valid), ("g_adv", g_adv), ("d_loss", d)):
                sums[k] += float(v.detach())
            if on_step:
                on_step(epoch * steps + i + 1, total)
        if on_epoch:
            on_epoch(epoch, {k: v / steps for k, v in sums.items()})
    return net.to(CPU).eval()
