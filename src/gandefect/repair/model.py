"""Mask-conditioned inpainting U-Net and the patch discriminator that trains it.

The U-Net sees the image with the hole pre-filled by a classical pull-push fill (Gortler et
al. 1996: the known pixels averaged down an image pyramid, then interpolated back up into the
hole, then a few smoothing passes) and the mask as one more channel, and it predicts a
correction of that fill; only the hole is kept (`composite`). So an untrained net already
inpaints like a smooth classical method, and training only has to add what a smooth fill
cannot (edges and texture that continue into the hole): on 64-px photo crops the fill alone
is 0.9 dB above skimage's biharmonic inpainting, which a net that had to learn colour
continuation from a mid-gray hole did not reach in a 4-epoch budget. Repairers saved before
the fill existed (`UNetShape.prefill` absent) keep their mid-gray input when loaded.
Any size works: inputs are padded to a multiple of 4 and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gandefect.config import RepairConfig


@dataclass
class UNetShape:
    """The inpainting U-Net's shape, built from the `data` and `repair` sections by name."""

    channels: int = 1
    width: int = RepairConfig.model_fields["width"].default
    prefill: bool = True  # pull-push fill of the hole as the input and the base of the output

    def __setstate__(self, state: dict) -> None:
        state.setdefault("prefill", False)  # pickled before the fill existed: the mid-gray input it was trained on
        self.__dict__.update(state)


RepairerConfig = UNetShape  # the name that repairers registered before the rename were pickled under


SMOOTHING_PASSES = 10


def pull_push_fill(x: torch.Tensor, hole: torch.Tensor, smoothing: int = SMOOTHING_PASSES) -> torch.Tensor:
    """Fill the hole (mask 1) of x (N, C, H, W) from the known pixels: the mask-weighted mean
    of the known pixels at each level of a 2x pyramid, bilinearly interpolated back into the
    hole, then `smoothing` passes of a 3x3 mean inside the hole. Known pixels are returned
    unchanged; an image with no known pixel is filled with 0 (mid-gray)."""
    known = 1 - hole
    if min(x.shape[2:]) <= 2:
        mean = (x * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(min=1)
        filled = known * x + hole * mean
    else:
        weight = F.avg_pool2d(known, 2, ceil_mode=True)
        coarse = F.avg_pool2d(x * known, 2, ceil_mode=True) / weight.clamp(min=1e-6)
        coarse = pull_push_fill(coarse, (weight <= 1e-6).to(x.dtype), 0)
        filled = known * x + hole * F.interpolate(coarse, size=x.shape[2:], mode="bilinear", align_corners=False)
    for _ in range(smoothing):
        filled = known * x + hole * F.avg_pool2d(F.pad(filled, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return filled


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation), nn.GroupNorm(8, cout), nn.SiLU(True)]


class InpaintUNet(nn.Module):
    """Two down-samplings, a dilated bottleneck (receptive field covers a 28x28 image), two
    up-samplings with skip connections; the output, in [-1, 1], is the pull-push fill plus the
    net's correction (tanh of the net's output for a repairer saved before the fill existed)."""

    def __init__(self, cfg: UNetShape):
        super().__init__()
        self.cfg = cfg
        c, w = cfg.channels, cfg.width
        self.enc1 = nn.Sequential(*_conv(c + 1, w), *_conv(w, w))
        self.enc2 = nn.Sequential(*_conv(w, 2 * w, 2), *_conv(2 * w, 2 * w))
        self.enc3 = nn.Sequential(
            *_conv(2 * w, 4 * w, 2), *_conv(4 * w, 4 * w, dilation=2), *_conv(4 * w, 4 * w, dilation=4)
        )
        self.dec2 = nn.Sequential(*_conv(4 * w + 2 * w, 2 * w), *_conv(2 * w, 2 * w))
        self.dec1 = nn.Sequential(*_conv(2 * w + w, w), *_conv(w, w))
        self.out = nn.Conv2d(w, c, 3, 1, 1)
        if cfg.prefill:  # start as the classical fill: the correction is 0 until training moves it
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def inpaint(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) in [-1, 1]; mask: (N, 1, H, W), 1 = rewrite. Returns the full prediction."""
        return self(torch.cat([x, mask], 1))

    def forward(self, x_and_mask: torch.Tensor) -> torch.Tensor:
        """One tensor (image channels, then the mask channel), so the MLflow signature is one array."""
        x, mask = x_and_mask[:, :-1], x_and_mask[:, -1:]
        h, w = x.shape[2:]
        ph, pw = (-h) % 4, (-w) % 4
        prefill = getattr(self.cfg, "prefill", False)
        base = pull_push_fill(x, mask) if prefill else x * (1 - mask)
        inp = torch.cat([base, mask], 1)
        if ph or pw:
            inp = F.pad(inp, (0, pw, 0, ph), mode="replicate")
        e1 = self.enc1(inp)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[2:], mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[2:], mode="nearest"), e1], 1))
        out = self.out(d1)[:, :, :h, :w]
        return (base + out).clamp(-1, 1) if prefill else torch.tanh(out)


def composite(x: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The prediction inside the mask, the input outside it."""
    return mask * prediction + (1 - mask) * x


class PatchDiscriminator(nn.Module):
    """Spectral-normalized patch critic on (image, mask): one logit per ~11x11 patch."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(channels + 1, width, 3, 1, 1)),
            nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)),
            nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(2 * width, 2 * width, 3, 1, 1)),
            nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(2 * width, 1, 3, 1, 1)),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, mask], 1))
