"""The diffusion-style zoo members: a DDPM with its DDIM sampler and a rectified flow with its
few-step Euler sampler, as generators like any other (flat noise in, images in [-1, 1] out)."""

import pytest
import torch

from gandefect.gan.diffusion import DDPM, RectifiedFlow
from gandefect.gan.models import DCGANConfig, noise
from gandefect.gan.trainer import DiffusionTrainer, TrainSettings

MODELS = {"ddpm": lambda cfg: DDPM(cfg, width=8, sample_steps=10),
          "rectflow": lambda cfg: RectifiedFlow(cfg, width=8, sample_steps=4)}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 16)])
def test_a_diffusion_member_maps_seeded_noise_to_images_like_any_generator(name, channels, size):
    torch.manual_seed(0)
    model = MODELS[name](DCGANConfig(image_size=size, channels=channels)).eval()
    assert model.cfg.z_dim == channels * size * size  # its latent is an image's worth of noise
    with torch.no_grad():
        x = model.sample(5, torch.Generator().manual_seed(3))
        again = model(noise(model, 5, torch.Generator().manual_seed(3)))
    assert x.shape == (5, channels, size, size) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, again)  # a fake set is a function of its seed: the samplers add no noise of their own


@pytest.mark.parametrize("name", MODELS)
def test_a_diffusion_member_learns_its_data(name):
    """Trained on one image, its sampler turns any noise into (nearly) that image: the training
    objective and the sampler agree on the schedule and the parametrization."""
    torch.manual_seed(0)
    target = torch.linspace(-0.8, 0.8, 64).view(1, 1, 8, 8)
    model = MODELS[name](DCGANConfig(image_size=8, channels=1))
    with torch.no_grad():
        untrained = (model.eval().sample(16, torch.Generator().manual_seed(1)) - target).abs().mean()
    trainer = DiffusionTrainer(model, TrainSettings(generator_steps=250, batch_size=16, early_epochs=()), lr=3e-3)
    result = trainer.fit(target.repeat(32, 1, 1, 1))
    assert result.generator_steps == 250
    with torch.no_grad():
        error = (model.eval().sample(16, torch.Generator().manual_seed(1)) - target).abs().mean()
    assert error < 0.15 < untrained, (float(error), float(untrained))
