"""The component bank: real images passed through the final components generators are built from.

A generator's traces come mostly from how its last layers turn features into pixels: transposed
convolutions leave checkerboards, nearest and bilinear resizing followed by convolutions leave
their own periodic and smoothing patterns, sub-pixel convolutions (pixel shuffle) a 2x2 phase
pattern, and a fully-connected decoder its own texture. The kinds are few; the generators built
from them are many. Each kind here is a small autoencoder (a strided-conv encoder to the
generators' base resolution, then that kind of up-sampling back to the image), trained briefly
to reconstruct real train images. Its reconstructions keep their real twin's content and carry
only the component's traces, so a detector trained on them beside the real twins learns those
traces rather than what generated digits look like: the "final component" idea (Rajan et al.,
"Aligned Datasets", ICLR 2025; Guillaro et al., B-Free, CVPR 2025, with a whole autoencoder).

No generator of any zoo family is involved: the bank is part of the detector's training recipe,
made from real images only, and leave-one-family-out keeps it when a family is held out. The
zoo's own members share these operators, so leave-one-family-out measures generalization across
models, losses and training of a known operator; `bench/external_family.py` measures families
made outside the project.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gandefect.config import size_plan

KINDS = ("transposed", "nearest", "bilinear", "shuffle", "dense")
FAMILY = "components"  # the family of every bank set (one share of the family-balanced draws)
BOTTLENECK = 8  # feature channels at the base resolution: a bottleneck, so reconstructions are not copies


def usable(size: int) -> bool:
    """Whether images of `size` pixels have a base resolution to up-sample from (the generators'
    plan, `gandefect.config.size_plan`: at least one 2x up-sampling)."""
    return size_plan(size)[1] >= 1


class ComponentAE(nn.Module):
    """conv3 -> ups x [conv4 stride 2] -> 1x1 to BOTTLENECK channels at the base size -> ups x
    [`kind` up-sampling by 2, ReLU] -> conv3 (`dense`: two linear layers instead)."""

    def __init__(self, channels: int, size: int, kind: str, width: int = 16):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown component {kind!r}; known: {', '.join(KINDS)}")
        base, ups = size_plan(size)
        self.kind, self.shape = kind, (channels, size, size)
        enc, ch = [nn.Conv2d(channels, width, 3, 1, 1), nn.LeakyReLU(0.2, True)], width
        for _ in range(ups):
            enc += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            ch *= 2
        self.encoder = nn.Sequential(*enc, nn.Conv2d(ch, BOTTLENECK, 1))
        if kind == "dense":
            self.decoder = nn.Sequential(
                nn.Flatten(),
                nn.Linear(BOTTLENECK * base * base, 256),
                nn.ReLU(True),
                nn.Linear(256, channels * size * size),
            )
            return
        layers = [nn.Conv2d(BOTTLENECK, ch, 3, 1, 1), nn.ReLU(True)]
        for _ in range(ups):
            layers += [_up(kind, ch, ch // 2), nn.ReLU(True)]
            ch //= 2
        # no tanh: a saturated tanh stalls on the all-background image; reconstruct() clamps
        self.decoder = nn.Sequential(*layers, nn.Conv2d(ch, channels, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)).view(len(x), *self.shape)


class _Resize(nn.Module):
    def __init__(self, mode: str, cin: int, cout: int):
        super().__init__()
        self.mode, self.conv = mode, nn.Conv2d(cin, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode=self.mode))


def _up(kind: str, cin: int, cout: int) -> nn.Module:
    if kind == "transposed":
        return nn.ConvTranspose2d(cin, cout, 4, 2, 1)
    if kind == "shuffle":
        return nn.Sequential(nn.Conv2d(cin, cout * 4, 3, 1, 1), nn.PixelShuffle(2))
    return _Resize(kind, cin, cout)


def train_component(
    x: torch.Tensor, kind: str, steps: int, seed: int, batch_size: int = 64, device: torch.device | None = None
) -> ComponentAE:
    """A `kind` autoencoder fitted to images `x` (N, C, H, W in [-1, 1]) for `steps` Adam steps of
    squared-error reconstruction loss (L1 settles on the all-background image of sparse digits);
    seeded, returned in eval mode on the CPU."""
    torch.manual_seed(seed)
    device = device or torch.device("cpu")
    model = ComponentAE(x.shape[1], x.shape[2], kind).to(device)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    rng = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = x[torch.randint(len(x), (min(batch_size, len(x)),), generator=rng)].to(device)
        loss = ((model(batch) - batch) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.to("cpu").eval()


@torch.no_grad()
def reconstruct(model: ComponentAE, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).clamp(-1, 1)


def bank(
    x: torch.Tensor, per_kind: int, steps: int, seed: int, device: torch.device | None = None, progress=None
) -> dict[str, torch.Tensor]:
    """kind -> reconstructions of `per_kind` of the images `x` (a seeded choice per kind, each
    kind fitted on all of `x`); empty where the image size has nothing to up-sample from."""
    if not usable(x.shape[2]) or per_kind <= 0:
        return {}
    out = {}
    for i, kind in enumerate(KINDS):
        model = train_component(x, kind, steps, seed + i, device=device)
        pick = np.sort(np.random.default_rng(seed + i).choice(len(x), min(per_kind, len(x)), replace=False))
        out[kind] = reconstruct(model, x[torch.from_numpy(pick)])
        if progress:
            progress("component bank", i + 1, len(KINDS))
    return out
