"""The detector families: one entry each, a factory of an untrained detector from the Config.

A factory gets `held_out` (the lighter recipe of the leave-one-family-out models) and `start`
(a trained detector, the champion, to fine-tune from where the family can). Adding a family
is adding an entry to `FAMILIES`; `detect.families` names entries of it.
"""

from __future__ import annotations

from collections.abc import Callable

from gandefect import hardware
from gandefect.config import Config, registered
from gandefect.detect.cnn import CNNDetector
from gandefect.detect.common import Detector
from gandefect.detect.spectral import SpectralDetector

Factory = Callable[[Config, bool, "Detector | None"], Detector]


def _channels(cfg: Config) -> int:
    return 1 if cfg.data.mode == "L" else 3


def _cnn(cfg: Config, held_out: bool, start: Detector | None) -> CNNDetector:
    """`detect.cnn`; held out: `loo_width` and `loo_epochs`, one member; started from a champion of the same
    shape: `finetune_epochs` at `finetune_lr`, `finetune_p_process` of its images processed."""
    c = cfg.detect.cnn
    if held_out:
        c = c.model_copy(update={"width": c.loo_width, "epochs": c.loo_epochs, "members": 1})
    det = CNNDetector(c, _channels(cfg), cfg.seed)
    if start is not None and not held_out and det.start_from(start):
        p_process = c.p_process if c.finetune_p_process is None else c.finetune_p_process
        det.cfg = c.model_copy(update={"epochs": c.finetune_epochs, "lr": c.finetune_lr, "p_process": p_process})
    return det


def _spectral(cfg: Config, held_out: bool, start: Detector | None) -> SpectralDetector:
    """`detect.spectral`, the same recipe held out or not, always trained from scratch."""
    return SpectralDetector(cfg.detect.spectral, cfg.seed)


FAMILIES: dict[str, Factory] = {"cnn": _cnn, "spectral": _spectral}


def selected(names: list[str] | None) -> list[str]:
    """The families `detect.families` names; None: every registered family, in registry order."""
    return registered(names, FAMILIES, "detect.families", "family")


def build(cfg: Config, family: str, held_out: bool = False, start: Detector | None = None) -> Detector:
    """An untrained detector of `family`, fine-tuned from `start` when the family can."""
    (name,) = selected([family])
    device = hardware.resolve(cfg.device)
    return FAMILIES[name](cfg, held_out, start).on(device, hardware.use_bf16(cfg.precision, device))
