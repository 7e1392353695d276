"""The repairer's pull-push prefill: an untrained net inpaints like the classical fill, the fill
continues smooth content into a hole, and repairers saved before the fill keep their input."""

import pickle

import numpy as np
import torch

from gandefect.evaluate.repair import mean_fill, psnr_in_mask
from gandefect.repair.model import InpaintUNet, RepairerConfig
from gandefect.repair.pipeline import Repairer, pull_push


def _gradients(n: int = 8, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    images = []
    for _ in range(n):
        a, b, c = rng.uniform(0, 255, 3)
        images.append(np.stack([a * xx + (255 - a) * yy, b * yy + 0 * xx, c * (1 - xx)], -1))
    masks = np.zeros((n, size, size), bool)
    masks[:, 8:22, 10:26] = True
    return np.clip(np.round(images), 0, 255).astype(np.uint8), masks


def test_pull_push_continues_smooth_content_far_better_than_a_mean_fill():
    images, masks = _gradients()
    holed = images.copy()
    holed[masks] = 0
    assert (
        psnr_in_mask(pull_push(holed, masks), images, masks) > psnr_in_mask(mean_fill(holed, masks), images, masks) + 10
    )
    assert (pull_push(holed, masks)[~masks] == holed[~masks]).all()


def test_an_untrained_repairer_is_the_pull_push_fill():
    images, masks = _gradients()
    torch.manual_seed(0)
    net = InpaintUNet(RepairerConfig(channels=3, width=8))
    assert np.abs(Repairer(net).inpaint(images, masks).astype(int) - pull_push(images, masks)).max() <= 1


def test_a_repairer_pickled_before_the_fill_keeps_its_mid_gray_input():
    old = RepairerConfig(channels=3, width=8)
    state = dict(old.__dict__)
    del state["prefill"]  # what a config pickled before the field existed holds
    old.__dict__ = state
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.prefill is False
    assert pickle.loads(pickle.dumps(RepairerConfig(channels=3, width=8))).prefill is True
    images, masks = _gradients(2)
    torch.manual_seed(0)
    net = InpaintUNet(loaded)  # the old recipe: a tanh output from a mid-gray hole
    out = Repairer(net).inpaint(images, masks)
    assert np.abs(out.astype(int) - pull_push(images, masks)).max() > 5
