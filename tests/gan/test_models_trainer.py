"""Size-agnostic DCGAN and the trainer's step accounting and checkpoints."""

import pytest
import torch

from gandefect.gan import losses
from gandefect.gan.models import DCGANConfig, Discriminator, Generator
from gandefect.gan.trainer import CHECKPOINT, GANTrainer, TrainSettings


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 1), (64, 3), (16, 3)])
def test_dcgan_is_size_agnostic(size, channels):
    cfg = DCGANConfig(image_size=size, channels=channels, g_width=8, d_width=8)
    g, d = Generator(cfg), Discriminator(cfg)
    x = g(torch.randn(3, cfg.z_dim))
    assert x.shape == (3, channels, size, size) and x.abs().max() <= 1
    assert d(x).shape == (3,)


def test_critic_losses_take_n_critic_steps_per_generator_step():
    real = torch.rand(40, 1, 28, 28) * 2 - 1
    for name in ("wgan-gp", "hinge"):
        loss = losses.get(name)
        result = GANTrainer(
            loss, DCGANConfig(g_width=8, d_width=8), TrainSettings(generator_steps=3, batch_size=8)
        ).fit(real)
        assert result.generator_steps == 3 and result.steps == 3 * loss.n_critic


def test_wgan_gp_critic_has_no_batch_norm():
    trainer = GANTrainer(losses.get("wgan-gp"), DCGANConfig(g_width=8, d_width=8), TrainSettings())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trainer.D.modules())


def test_resumed_training_matches_an_uninterrupted_run(tmp_path):
    real = torch.rand(48, 1, 28, 28) * 2 - 1
    settings = TrainSettings(generator_steps=6, batch_size=8, checkpoint_every=1, early_epochs=())
    full = GANTrainer(losses.get("nonsaturating"), DCGANConfig(g_width=8, d_width=8), settings)
    full.fit(real)

    first = GANTrainer(
        losses.get("nonsaturating"),
        DCGANConfig(g_width=8, d_width=8),
        TrainSettings(generator_steps=4, batch_size=8, checkpoint_every=1, early_epochs=()),
        tmp_path,
    )
    first.fit(real)
    assert (tmp_path / CHECKPOINT).exists()
    resumed = GANTrainer(losses.get("nonsaturating"), DCGANConfig(g_width=8, d_width=8), settings, tmp_path)
    result = resumed.fit(real, resume=True)
    assert result.resumed_from == 4 and result.steps == 6
    for a, b in zip(full.G.state_dict().values(), resumed.G.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
