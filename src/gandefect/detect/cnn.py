"""Fully convolutional patch detector (cf. patch-forensics, Chai et al. 2020).

A shallow conv net with a 13-pixel receptive field classifies every patch; the image logit
is the mean of the patch logits, and the sigmoid of the patch logit map, up-sampled to the
image size, is the defect map. Small receptive fields make it look at local texture and
up-sampling traces rather than at what the digit is.

Pixel supervision: with probability `p_splice` a training pair (real, generated) becomes
a spliced image (the generated image's pixels inside a random rectangle or blob, the real
ones outside) whose patch targets are the mask's coverage of each patch. Whole real and
whole generated images keep their constant targets, so the net learns *where* as well as
*whether*. Masks are drawn from a wider area range than any benchmark uses.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gandefect import hardware
from gandefect.config import CNNDetectorConfig
from gandefect.data.conditions import augment
from gandefect.data.spliced import MaskSpec, mask_pool, splice
from gandefect.detect.common import Detector, Labeled, upgraded

SPLICE_MASKS = MaskSpec(0.02, 0.6, ("rect", "blob"))  # training splices: wider than any benchmark's areas


@dataclass
class CNNConfig:
    """The settings object of CNN detectors pickled before `detect.cnn` itself was their settings:
    kept so that registered champions still load (`CNNDetector.__setstate__` converts it)."""

    channels: int = 1
    width: int = 32
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    p_process: float = 0.6
    p_splice: float = 0.5
    p_process_spliced: float = 0.3
    focal_gamma: float = 0.0
    splice_min_area: float = 0.02
    splice_max_area: float = 0.6
    seed: int = 0


def _block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, True)]


class PatchNet(nn.Module):
    """conv3 (RF 3) -> conv3 stride 2 (RF 5) -> conv3 (RF 9) -> conv3 (RF 13) -> 1x1 patch logit,
    and on the same features a whole-image branch (two stride-2 convs, global average pool,
    linear) whose logit is the image's score: it sees the whole picture, so it can weigh a
    local trace against what the rest of the image shows (e.g. compression everywhere)."""

    def __init__(self, channels: int, width: int, radial: bool = False):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            *_block(channels, w // 2), *_block(w // 2, w, 2), *_block(w, 2 * w), *_block(2 * w, 2 * w)
        )
        self.head = nn.Conv2d(2 * w, 1, 1)
        self.image_head = nn.Sequential(
            *_block(2 * w, 2 * w, 2),
            *_block(2 * w, 4 * w, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            RadialLogit(4 * w, RADIAL_DIMS) if radial else nn.Linear(4 * w, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(patch logit map (N, 1, H/2, W/2), image logit (N,))."""
        features = self.body(x)
        return self.head(features), self.image_head(features)[:, 0]

    @property
    def radial(self) -> bool:
        """Whether the image score is a distance from the real images' centre (nets stored before
        the option have the linear head, whatever their upgraded settings say)."""
        return isinstance(self.image_head[-1], RadialLogit)


RADIAL_DIMS = 16


class MemberMean(nn.Module):
    """Several PatchNets of one shape, each from its own initialisation, trained side by side on the
    same batches; the ensemble's patch and image logits are the members' means. One net's
    verdicts on the rarest real images (the tail that sets the served threshold) move with its
    seed; the mean of a few moves less (deep ensembles, Lakshminarayanan et al. 2017)."""

    def __init__(self, members: list[PatchNet]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def each(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [m(x) for m in self.members]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.each(x)
        return torch.stack([m for m, _ in out]).mean(0), torch.stack([s for _, s in out]).mean(0)

    @property
    def radial(self) -> bool:
        return self.members[0].radial


def _members(net: nn.Module) -> int:
    return len(net.members) if isinstance(net, MemberMean) else 1


def _each(net: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return net.each(x) if isinstance(net, MemberMean) else [net(x)]


class RadialLogit(nn.Module):
    """A boundary centred on the real class (Deep SVDD, Ruff et al. 2018; the real-centred view of
    SimLBR, 2026): the logit grows with the squared distance of the projected features from a
    learnt centre, so real images are pulled into a ball and every fake family is a sink outside
    it. An image unlike anything trained on lands outside the ball in whatever direction it lies,
    where a linear head would call half of such directions real."""

    def __init__(self, features: int, dims: int):
        super().__init__()
        self.project = nn.Linear(features, dims)
        self.log_scale = nn.Parameter(torch.zeros(1))
        self.radius = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp() * (self.project(x).pow(2).mean(1, keepdim=True) - self.radius)


def _image_loss(logit: torch.Tensor, label: torch.Tensor, pos_weight: torch.Tensor, gamma: float) -> torch.Tensor:
    """Class-balanced cross-entropy, times (1 - p_true)^gamma (focal loss, Lin et al. 2017): the
    many easy images (crude early samples, collapsed generators) stop drowning the hard ones."""
    ce = F.binary_cross_entropy_with_logits(logit, label, reduction="none")
    weight = torch.where(label > 0, pos_weight, torch.ones_like(label))
    if gamma:
        p_true = torch.exp(-ce)
        weight = weight * (1 - p_true).detach() ** gamma
    return (weight * ce).mean()


def _distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Cross-entropy of the student's logits against the teacher's softened probabilities (Li &
    Hoiem 2017), times T^2 so its gradients keep their scale whatever the temperature."""
    target = torch.sigmoid(teacher / temperature)
    return F.binary_cross_entropy_with_logits(student / temperature, target) * temperature**2


def _family_balanced(
    train: Labeled, new: np.ndarray | None = None, new_share: float | None = None
) -> np.ndarray | None:
    """Drawing probabilities under which real images make half of the draws and every generator
    family an equal share of the other half (a family of many losses or samples no longer drowns
    a small one); None without both classes. With `new_share`, the generated images where `new`
    holds (generators a warm start has not seen) make that share of the generated draws."""
    real = train.labels == 0
    families = train.families[~real]
    if real.all() or not real.any():
        return None
    p = np.zeros(len(train.labels))
    p[real] = 0.5 / real.sum()
    names, inverse, counts = np.unique(families.astype(str), return_inverse=True, return_counts=True)
    p[~real] = 0.5 / len(names) / counts[inverse]
    if new_share is not None and new is not None and (new & ~real).any() and (~new & ~real).any():
        fresh, old = new & ~real, ~new & ~real
        p[fresh] *= 0.5 * new_share / p[fresh].sum()
        p[old] *= 0.5 * (1 - new_share) / p[old].sum()
    return p / p.sum()


def _tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
    return x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)


class CNNDetector(Detector):
    """Trained with the `detect.cnn` settings (the caller picks the width, epochs and lr of a
    lighter or fine-tuned recipe); `channels` and `seed` come from the data and the run."""

    family = "cnn"

    def __init__(self, cfg: CNNDetectorConfig | None = None, channels: int = 1, seed: int = 0):
        super().__init__()
        self.cfg, self.channels, self.seed = cfg or CNNDetectorConfig(), channels, seed
        torch.manual_seed(seed)
        nets = [PatchNet(channels, self.cfg.width, self.cfg.head == "radial") for _ in range(self.cfg.members)]
        self.net = nets[0] if len(nets) == 1 else MemberMean(nets)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(upgraded(state, CNNConfig, CNNDetectorConfig, ("channels", "seed")))

    def start_from(self, other: Detector) -> bool:
        """Take `other`'s weights when it is a CNN detector of the same shape; whether it was."""
        if (
            not isinstance(other, CNNDetector)
            or other.channels != self.channels
            or other.cfg.width != self.cfg.width
            or other.net.radial != self.net.radial
            or _members(other.net) != _members(self.net)
        ):
            return False
        self.net.load_state_dict(other.net.state_dict())
        self.started_from = list(other.trained_on)
        self._teacher = other.net  # read, never trained: soft targets while fine-tuning (cfg.distill)
        return True

    def fit(self, train: Labeled, progress=None) -> CNNDetector:
        c = self.cfg
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        n_fake = int(train.labels.sum())
        n_real = len(train.labels) - n_fake
        # class balance: each class contributes equally to the loss whatever its count
        device = self.device
        pos_weight = torch.tensor(n_real / max(1, n_fake), device=device)
        opt = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=1e-4)
        steps_per_epoch = len(train.labels) // c.batch_size
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, c.lr, total_steps=max(1, c.epochs * steps_per_epoch))
        labels = train.labels.astype(np.float32)
        real_idx, fake_idx = np.flatnonzero(train.labels == 0), np.flatnonzero(train.labels == 1)
        # the champion's verdicts on what it already knows are kept while the new data is learned
        teacher = getattr(self, "_teacher", None) if c.distill > 0 else None
        started_from = getattr(self, "started_from", None)  # set by a warm start
        known = np.isin(train.generators, ["real", *(started_from or [])])
        draw = (
            _family_balanced(train, ~known, c.new_share if started_from is not None else None)
            if c.balance == "family"
            else None
        )
        if draw is not None:  # both classes are drawn equally often: no class weight on top
            pos_weight = torch.tensor(1.0, device=device)
        masks = (
            mask_pool(rng, train.images.shape[1:3], SPLICE_MASKS, 2048)
            if c.p_splice > 0 and len(real_idx) and len(fake_idx)
            else None
        )
        if teacher is not None:
            teacher = copy.deepcopy(teacher).to(device).eval().requires_grad_(False)
            hardware.channels_last(teacher)
        hardware.channels_last(self.net)
        self.net.to(device).train()

        def batches():  # every draw from rng from here on, in the order the steps take them
            for epoch in range(c.epochs):
                order = (
                    rng.permutation(len(train.labels))
                    if draw is None
                    else rng.choice(len(train.labels), len(train.labels), p=draw)
                )
                for i in range(steps_per_epoch):
                    idx = order[i * c.batch_size : (i + 1) * c.batch_size]
                    yield idx, *self._batch(rng, train, idx, labels, masks, real_idx, fake_idx)

        total = c.epochs * steps_per_epoch
        made = hardware.prefetched(batches()) if hardware.batches_ahead(device) else batches()
        with contextlib.closing(made) as steps:
            for step, (idx, images, target, spliced) in enumerate(steps, 1):
                held = known[idx] & ~spliced  # whole images of what the champion knew
                taught = None
                if teacher is not None and held.any():
                    with torch.no_grad(), hardware.autocast(self.bf16, device):
                        t_logits, t_image = teacher(hardware.batch(_tensor(images[held]), device))
                    taught = (torch.from_numpy(held).to(device), t_logits.float(), t_image.float())
                loss = self._loss(images, target, ~spliced, labels[idx], pos_weight, taught)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if progress:
                    progress("cnn detector", step, total)
        self.net.to(hardware.CPU).eval()
        self.__dict__.pop("_teacher", None)  # the champion is not part of this model
        # a warm-started net has seen its predecessor's generators as well
        self.trained_on = sorted((set(train.generators) | set(getattr(self, "started_from", []))) - {"real"})
        return self

    def _batch(self, rng, train: Labeled, idx, labels, masks, real_idx, fake_idx):
        """One step's images and per-pixel targets (1 where generated): spliced where the mask
        pool allows, then through random processing chains; and which images were spliced."""
        c = self.cfg
        images = train.images[idx].copy()
        target = np.broadcast_to(labels[idx][:, None, None], (len(idx),) + images.shape[1:3]).copy()
        spliced = np.zeros(len(idx), bool)
        if masks is not None:
            spliced = self._splice_batch(rng, train.images, real_idx, fake_idx, masks, images, target)
        images[~spliced] = augment(images[~spliced], rng, c.p_process)
        images[spliced] = augment(images[spliced], rng, c.p_process_spliced)
        return images, target, spliced

    def _loss(self, images, target, whole, image_labels, pos_weight, taught) -> torch.Tensor:
        """The step's loss: the patch targets are the share of each patch's pixels that is
        generated; the image score learns from whole images only, all processed alike (spliced
        ones, less processed so the maps stay sharp, would otherwise teach "clean = generated");
        `taught` (the images the champion knew, its logits): distillation towards its verdicts."""
        c, device = self.cfg, self.device
        whole, image_labels = torch.from_numpy(whole).to(device), torch.from_numpy(image_labels).to(device)
        loss = 0.0
        with hardware.autocast(self.bf16, device):
            outputs = _each(self.net, hardware.batch(_tensor(images), device))
        t = F.adaptive_avg_pool2d(torch.from_numpy(target)[:, None].to(device), outputs[0][0].shape[2:])
        for logits, image_logit in outputs:  # every member learns on its own; the mean is only served
            logits, image_logit = logits.float(), image_logit.float()
            loss = (
                loss
                + F.binary_cross_entropy_with_logits(logits, t, pos_weight=pos_weight)
                + _image_loss(image_logit[whole], image_labels[whole], pos_weight, c.focal_gamma)
            )
            if taught is not None:
                keep, t_logits, t_image = taught
                loss = loss + c.distill * (
                    _distillation(logits[keep], t_logits) + _distillation(image_logit[keep], t_image)
                )
        return loss

    def _splice_batch(self, rng, pool, real_idx, fake_idx, masks, images, target) -> np.ndarray:
        """Replace a p_splice share of the batch by spliced images and their pixel targets (in
        place); returns which were replaced."""
        chosen = rng.random(len(images)) < self.cfg.p_splice
        for k in np.flatnonzero(chosen):
            real, fake = pool[rng.choice(real_idx)], pool[rng.choice(fake_idx)]
            mask = masks[rng.integers(len(masks))]
            if rng.random() < 0.5:  # the generated image as background, a real region pasted in
                real, fake = fake, real
                target[k] = ~mask
            else:
                target[k] = mask
            images[k] = splice(real, fake, mask)
        return chosen

    @torch.no_grad()
    def _outputs(self, images: np.ndarray, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        self.net.eval().to(
            memory_format=torch.channels_last
        )  # 1.4x NCHW's speed on a CPU (a champion stored before: NCHW)
        with hardware.placed(self.net, self.device):
            out = [
                self.net(hardware.batch(_tensor(images[i : i + batch_size]), self.device))
                for i in range(0, len(images), batch_size)
            ]
            return torch.cat([m for m, _ in out]).to(hardware.CPU), torch.cat([s for _, s in out]).to(hardware.CPU)

    def raw_scores(self, images: np.ndarray) -> np.ndarray:
        return self._outputs(images)[1].numpy().astype(np.float64)

    def raw_maps(self, images: np.ndarray) -> np.ndarray:
        maps = self._outputs(images)[0]
        up = F.interpolate(maps, size=images.shape[1:3], mode="bilinear", align_corners=False)
        return torch.sigmoid(up)[:, 0].numpy()
