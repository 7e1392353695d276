"""The diffusion-style zoo members: a DDPM with its DDIM sampler and a rectified flow with its
few-step Euler sampler, as generators like any other (flat noise in, images in [-1, 1] out)."""

import pytest
import torch

from gandefect.gan.diffusion import DDPM, RectifiedFlow
from gandefect.gan.models import DCGANConfig, noise
from gandefect.gan.trainer import DiffusionTrainer, TrainSettings

MODELS = {
    "ddpm": lambda cfg: DDPM(cfg, width=8, sample_steps=10),
    "rectflow": lambda cfg: RectifiedFlow(cfg, width=8, sample_steps=4),
}


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


@pytest.mark.parametrize("name", MODELS)
def test_an_aligned_fake_keeps_its_real_twin_s_content_and_carries_the_model_s_trace(name):
    """`refine` (the aligned path): a real image noised part of the way and denoised by the model
    stays nearest its own twin among the real images, and is not that image."""
    torch.manual_seed(0)
    ramp = torch.linspace(-0.9, 0.9, 8)
    real = torch.stack(
        [
            ramp.view(1, 8).expand(8, 8),
            ramp.view(8, 1).expand(8, 8),
            -ramp.view(1, 8).expand(8, 8),
            -ramp.view(8, 1).expand(8, 8),
        ]
    )[:, None]
    model = MODELS[name](DCGANConfig(image_size=8, channels=1))
    DiffusionTrainer(model, TrainSettings(generator_steps=250, batch_size=16, early_epochs=()), lr=3e-3).fit(
        real.repeat(8, 1, 1, 1)
    )
    with torch.no_grad():
        z = noise(model.eval(), len(real), torch.Generator().manual_seed(5))
        aligned = model.refine(real, 0.35, z)
        assert torch.equal(aligned, model.refine(real, 0.35, z))  # a function of the image and the noise
    distances = torch.cdist(aligned.flatten(1), real.flatten(1))
    assert torch.equal(distances.argmin(1), torch.arange(len(real)))  # the same content as its twin
    assert (aligned - real).abs().flatten(1).amax(1).min() > 2 / 255  # ... but not the twin: the model drew it
