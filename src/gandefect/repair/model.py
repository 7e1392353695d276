"""Mask-conditioned inpainting U-Net and the patch discriminator that trains it.

The U-Net sees the image with the hole blanked (set to 0 in [-1, 1] space, i.e. mid-gray)
and the mask as one more channel; it outputs a whole image, of which only the hole is kept
(`composite`). Any size works: inputs are padded to a multiple of 4 and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class RepairerConfig:
    channels: int = 1
    width: int = 32


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation), nn.GroupNorm(8, cout), nn.SiLU(True)]


class InpaintUNet(nn.Module):
    """Two down-samplings, a dilated bottleneck (receptive field covers a 28x28 image), two
    up-samplings with skip connections; tanh output in [-1, 1]."""

    def __init__(self, cfg: RepairerConfig):
        super().__init__()
        self.cfg = cfg
        c, w = cfg.channels, cfg.width
        self.enc1 = nn.Sequential(*_conv(c + 1, w), *_conv(w, w))
        self.enc2 = nn.Sequential(*_conv(w, 2 * w, 2), *_conv(2 * w, 2 * w))
        self.enc3 = nn.Sequential(*_conv(2 * w, 4 * w, 2), *_conv(4 * w, 4 * w, dilation=2), *_conv(4 * w, 4 * w, dilation=4))
        self.dec2 = nn.Sequential(*_conv(4 * w + 2 * w, 2 * w), *_conv(2 * w, 2 * w))
        self.dec1 = nn.Sequential(*_conv(2 * w + w, w), *_conv(w, w))
        self.out = nn.Conv2d(w, c, 3, 1, 1)

    def inpaint(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) in [-1, 1]; mask: (N, 1, H, W), 1 = rewrite. Returns the full prediction."""
        return self(torch.cat([x, mask], 1))

    def forward(self, x_and_mask: torch.Tensor) -> torch.Tensor:
        """One tensor (image channels, then the mask channel), so the MLflow signature is one array."""
        x, mask = x_and_mask[:, :-1], x_and_mask[:, -1:]
        h, w = x.shape[2:]
        ph, pw = (-h) % 4, (-w) % 4
        inp = torch.cat([x * (1 - mask), mask], 1)
        if ph or pw:
            inp = F.pad(inp, (0, pw, 0, ph), mode="replicate")
        e1 = self.enc1(inp)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[2:], mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[2:], mode="nearest"), e1], 1))
        return torch.tanh(self.out(d1))[:, :, :h, :w]


def composite(x: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The prediction inside the mask, the input outside it."""
    return mask * prediction + (1 - mask) * x


class PatchDiscriminator(nn.Module):
    """Spectral-normalized patch critic on (image, mask): one logit per ~11x11 patch."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(channels + 1, width, 3, 1, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(2 * width, 2 * width, 3, 1, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(2 * width, 1, 3, 1, 1)),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, mask], 1))
