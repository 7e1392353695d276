"""The repair loop: the composite rule (nothing outside the mask changes) and the stop rule."""

import dataclasses

import numpy as np
import torch

from gandefect.config import RepairConfig
from gandefect.detect.common import Detector, Labeled
from gandefect.evaluate.repair import biharmonic, mean_fill, outside_change
from gandefect.gan import losses
from gandefect.repair.model import InpaintUNet, UNetShape
from gandefect.repair.pipeline import Repairer, repair
from gandefect.repair.train import train_repairer


class BrightPixelDetector(Detector):
    """A real (if simple) detector: bright pixels are 'generated'. Score = share of them * 10;
    the map marks them. Inpainting with a net that outputs black removes them."""

    family = "bright"

    def fit(self, train: Labeled, progress=None):
        return self

    def raw_scores(self, images):
        return (images > 200).mean(axis=(1, 2)) * 10

    def raw_maps(self, images):
        return (images > 200).astype(np.float32)


class BlackNet(InpaintUNet):
    """A U-Net whose output is black everywhere (the last conv's bias pinned very negative)."""

    def __init__(self):
        super().__init__(UNetShape(1, 8))
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.fill_(-20.0)


def _detector(threshold=0.5):
    d = BrightPixelDetector()
    d.threshold, d.map_threshold = threshold, 0.5
    d.platt = (1.0, -0.1)  # an image without bright pixels scores sigmoid(-0.1) < 0.5
    return d


def test_outside_mask_change_is_exactly_zero_on_random_images_and_masks():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    repairer = Repairer(InpaintUNet(UNetShape(1, 8)))  # untrained: arbitrary output
    for shape in [(16, 28, 28), (5, 20, 36)]:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        masks = rng.random(shape) < rng.uniform(0.05, 0.6)
        out = repairer.inpaint(images, masks)
        assert np.array_equal(out[~masks], images[~masks])
        assert outside_change(images, out, masks) == 0
        assert (out[masks] != images[masks]).mean() > 0.5  # the inside was rewritten


def test_rgb_composite_keeps_every_channel_outside_the_mask():
    rng = np.random.default_rng(1)
    repairer = Repairer(InpaintUNet(UNetShape(3, 8)))
    images = rng.integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    masks = rng.random((4, 24, 24)) < 0.3
    out = repairer.inpaint(images, masks)
    assert np.array_equal(out[~masks], images[~masks]) and outside_change(images, out, masks) == 0


def test_the_loop_stops_once_the_score_is_below_threshold():
    images = np.zeros((3, 28, 28), np.uint8)
    images[0, 2:6, 2:6] = 255  # 16 bright pixels: score sigmoid(0.2 - 0.1) > 0.5 -> repaired in one pass
    images[2, :, :4] = 255  # 112 bright pixels; max_area 0.05 (39 px) per pass: needs 3 passes
    result = repair(images, _detector(), Repairer(BlackNet()), iterations=5, max_area=0.05)
    assert list(result.iterations) == [1, 0, 3]
    assert result.stopped == ["below-threshold", "below-threshold", "below-threshold"]
    assert (result.images <= 200).all() and (result.score_after < 0.5).all()
    assert outside_change(images, result.images, result.masks) == 0


def test_the_loop_stops_after_k_passes_or_when_no_region_is_flagged():
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, :, :8] = 255  # 224 bright pixels, 39 per pass: 2 passes are not enough
    images[1, 10:12, 10:12] = 255
    detector = _detector(threshold=0.0)  # everything is 'flagged'; image 1 has a region, then none
    result = repair(images, detector, Repairer(BlackNet()), iterations=2, max_area=0.05)
    assert list(result.iterations) == [2, 1]
    assert result.stopped == ["max-iterations", "no-region"]
    assert (result.images[0] > 200).sum() == 224 - 2 * 39


def test_a_given_mask_is_inpainted_once_exactly_there():
    images = np.full((2, 28, 28), 255, np.uint8)
    masks = np.zeros((2, 28, 28), bool)
    masks[:, 5:9, 5:9] = True
    result = repair(images, _detector(), Repairer(BlackNet()), masks=masks)
    assert list(result.iterations) == [1, 1] and result.stopped == ["given-mask"] * 2
    assert (result.images[masks] == 0).all() and (result.images[~masks] == 255).all()


def test_a_trained_repairer_beats_both_classical_fills_on_held_out_structure():
    """One short training run on striped images: the net learns to continue the stripes."""
    rng = np.random.default_rng(3)
    x = np.zeros((256, 16, 16), np.uint8)
    for img in x:
        img[:, int(rng.integers(0, 4)) :: 4] = 255  # vertical stripes, random phase
    net = train_repairer(
        x[:192], UNetShape(1, 8), RepairConfig(epochs=8, batch_size=32, lr=3e-3, adversarial_weight=0.0), seed=0
    )
    test, masks = x[192:], np.zeros((64, 16, 16), bool)
    masks[:, 4:12, 4:12] = True
    repaired = Repairer(net).inpaint(test, masks)
    err = lambda a: np.abs(a[masks].astype(float) - test[masks]).mean()
    # the net continues the stripes; both classical fills (the repair evaluation's baselines) smear them
    # (measured: net 1.2, mean fill 95.8, biharmonic 96.4 gray levels of mean error in the hole)
    assert err(repaired) < 0.7 * err(mean_fill(test, masks))
    assert err(repaired) < 0.7 * err(biharmonic(test, masks))


class WhiteNet(InpaintUNet):
    """A U-Net whose output is white everywhere: every pass makes the bright-pixel score worse."""

    def __init__(self):
        super().__init__(UNetShape(1, 8))
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.fill_(20.0)


def test_a_pass_that_does_not_lower_the_score_is_undone_and_stops_the_loop():
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 5:9, 5:9] = 255  # flagged; inpainting it white keeps it just as bright
    image[0, 20:22, 3:25] = 120  # unflagged content the loop must not touch either way
    result = repair(image, _detector(), Repairer(WhiteNet()), iterations=5, max_area=0.5)
    assert result.stopped == ["no-improvement"]
    assert np.array_equal(result.images, image) and result.iterations[0] == 0 and not result.masks.any()
    assert result.score_after[0] == result.score_before[0]


@dataclasses.dataclass(frozen=True)
class CountedPenalty(losses.GradientPenalty):
    """The gradient penalty, recording the batch (image, mask) its critic is called on."""

    calls: list = dataclasses.field(default_factory=list, compare=False)

    def __call__(self, D, real, fake, *condition, generator=None):
        def critic(x, *c):
            self.calls.append((len(x), *(len(t) for t in c)))
            return D(x, *c)

        return losses.gradient_penalty(critic, real, fake, self.fraction, condition, generator)


def test_the_repairer_steps_its_critic_by_the_loss_entry_penalty_share_included():
    penalty = CountedPenalty(10.0, fraction=0.5)
    losses.register(dataclasses.replace(losses.get("wgan-gp"), name="wgan-gp-counted", penalty=penalty, n_critic=2))
    try:
        x = np.random.default_rng(0).integers(0, 256, (32, 16, 16), dtype=np.uint8)
        settings = RepairConfig(epochs=1, batch_size=16, adversarial_loss="wgan-gp-counted")
        train_repairer(x, UNetShape(1, 8), settings, seed=0)
    finally:
        del losses.REGISTRY["wgan-gp-counted"]
    assert penalty.calls == [(8, 8)] * 2 * 2  # 2 batches x n_critic, on half of each batch and its masks


def test_in_mask_psnr_without_spliced_test_images_is_missing_with_the_reason(tmp_path):
    from gandefect.config import load_config
    from gandefect.stages.repair import SPLICED_FIGURES, _spliced_psnr
    from tests.conftest import write_params

    cfg = load_config(write_params(tmp_path))
    spliced = tmp_path / "data" / "spliced"
    spliced.mkdir(parents=True)
    (spliced / "manifest.csv").write_text("path,mask_path,split,kind,area,real_sha256,generator\n")
    figures, rows = _spliced_psnr(cfg, repairer=None)  # nothing to repair: the repairer is never asked
    assert rows == [] and set(figures.missing) == set(SPLICED_FIGURES)
    assert figures.missing["psnr_gain"] == "0 spliced test images (a figure needs at least 1)"


def test_an_image_flagged_over_more_than_the_local_area_is_left_unchanged_with_the_reason():
    images = np.zeros((3, 20, 20), np.uint8)
    images[0, :, :12] = 255  # 240 of 400 pixels: exactly 0.6 of the image, still local
    images[1, :, :13] = 255  # 260 of 400: 0.65, over the rule's 0.6
    images[2, 0, :4] = 255  # a small defect
    result = repair(images, _detector(threshold=0.0), Repairer(BlackNet()), iterations=3, max_area=0.9, local_area=0.6)
    assert result.stopped[1] == "whole-image" and result.iterations[1] == 0
    assert np.array_equal(result.images[1], images[1]) and not result.masks[1].any()
    assert result.stopped[0] != "whole-image" and result.iterations[0] >= 1 and (result.images[0] == 0).all()
    assert result.iterations[2] >= 1 and (result.images[2] == 0).all()
    # by default no image is too flagged to repair
    assert repair(images, _detector(threshold=0.0), Repairer(BlackNet()), iterations=1, max_area=0.9).iterations[1] == 1


def test_the_diffusion_prior_rewrites_the_hole_only_and_repeats_itself():
    from gandefect.gan.diffusion import DDPM
    from gandefect.gan.models import DCGANConfig
    from gandefect.repair.prior import PriorInpainter

    torch.manual_seed(0)
    ddpm = DDPM(DCGANConfig(image_size=16, channels=1), width=8, sample_steps=4)  # untrained: any output
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, 16, 16), dtype=np.uint8)
    masks = rng.random((4, 16, 16)) < 0.4
    unet = InpaintUNet(UNetShape(1, 8))
    for start, strength, resample in ((None, 1.0, 0), (None, 0.5, 1), (unet, 0.2, 2)):
        prior = Repairer(PriorInpainter(ddpm, start, steps=4, strength=strength, resample=resample, seed=1))
        out = prior.inpaint(images, masks)
        assert outside_change(images, out, masks) == 0 and (out[masks] != images[masks]).mean() > 0.5
        assert np.array_equal(out, prior.inpaint(images, masks))  # seeded: the same fill again
