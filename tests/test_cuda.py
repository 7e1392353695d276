"""The CUDA path, on a machine with an NVIDIA GPU (the CPU path is the suite's default: these
tests need a GPU and are run wherever one is lent; tests/test_hardware.py covers device
selection on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gandefect import hardware
from gandefect.config import CNNDetectorConfig, RepairConfig
from gandefect.detect.cnn import CNNDetector
from gandefect.detect.common import Labeled
from gandefect.evaluate.features import FeatureNetConfig, train_contrastive_net
from gandefect.evaluate.generators import generator_metrics
from gandefect.gan import losses
from gandefect.gan.models import DCGANConfig
from gandefect.gan.trainer import GANTrainer, TrainSettings
from gandefect.repair.model import RepairerConfig
from gandefect.repair.pipeline import Repairer
from gandefect.repair.train import train_repairer

# collected only where torch sees a GPU (tests/conftest.py)
CUDA = torch.device("cuda")


def _digits(n: int = 256, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random blobs in [-1, 1] (N, 1, size, size)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(n, 1, size, size, generator=g), 5, 1, 2)
    return (x - x.mean()) / x.std() * 0.5


def test_auto_picks_the_gpu_and_bf16_is_used_there():
    assert hardware.resolve("auto") == CUDA
    assert hardware.bf16_ok(CUDA)
    assert hardware.use_bf16("auto", CUDA, on_cpu=False)  # the zoo's setting: bf16 on the GPU


@pytest.mark.parametrize("loss", ["nonsaturating", "wgan-gp"])
def test_a_gan_trains_on_the_gpu_in_bf16_and_its_generator_samples_anywhere(loss):
    trainer = GANTrainer(
        losses.get(loss),
        DCGANConfig(image_size=16, g_width=8, d_width=8),
        TrainSettings(
            generator_steps=20,
            batch_size=32,
            early_epochs=(1,),
            device=CUDA,
            bf16=hardware.use_bf16("auto", CUDA, on_cpu=False),
        ),
    )
    assert trainer.mixed
    result = trainer.fit(_digits())
    assert result.generator_steps == 20
    assert next(trainer.G.parameters()).is_cuda
    assert {p.device.type for p in result.early[1].parameters()} == {"cpu"}  # kept generators are stored on the CPU
    on_gpu = trainer.G.eval().sample(8, torch.Generator().manual_seed(3)).float().cpu()
    on_cpu = trainer.G.to(hardware.CPU).sample(8, torch.Generator().manual_seed(3))
    assert torch.isfinite(on_cpu).all()
    assert (on_gpu - on_cpu).abs().max() < 1e-2  # same noise, same weights: the same samples


def test_generator_metrics_agree_between_gpu_and_cpu():
    net = train_contrastive_net(
        FeatureNetConfig(image_size=16, channels=1, n_classes=0, n_features=32, space="contrastive"),
        _digits(),
        1,
        64,
        device=CUDA,
    )
    assert {p.device.type for p in net.parameters()} == {"cpu"}
    real, fake = _digits(200, seed=1), _digits(200, seed=2) * 0.8
    cpu = generator_metrics(net, real, fake)
    gpu = generator_metrics(net, real, fake, device=CUDA)
    assert gpu["fid"] == pytest.approx(cpu["fid"], rel=1e-3, abs=1e-3)
    assert gpu["precision"] == pytest.approx(cpu["precision"], abs=0.02)


def test_the_cnn_detector_trains_and_scores_on_the_gpu_and_is_stored_on_the_cpu():
    rng = np.random.default_rng(0)
    real = rng.integers(100, 156, (64, 16, 16), dtype=np.uint8)
    fake = (rng.integers(0, 2, (64, 16, 16)) * 255).astype(np.uint8)
    data = Labeled(np.concatenate([real, fake]), np.repeat([0, 1], 64), np.repeat(["real", "g"], 64))
    det = CNNDetector(CNNDetectorConfig(width=8, epochs=2, batch_size=32), channels=1).on(CUDA).fit(data)
    assert {p.device.type for p in det.net.parameters()} == {"cpu"}
    gpu = det.raw_scores(data.images)
    cpu = det.on(hardware.CPU).raw_scores(data.images)
    assert np.abs(gpu - cpu).max() < 1e-3


def test_the_repairer_trains_and_inpaints_on_the_gpu():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    net = train_repairer(
        images, RepairerConfig(channels=3, width=8), RepairConfig(epochs=1, batch_size=16), seed=0, device=CUDA
    )
    assert {p.device.type for p in net.parameters()} == {"cpu"}
    masks = np.zeros(images.shape[:3], bool)
    masks[:, 4:10, 4:10] = True
    gpu, cpu = Repairer(net, CUDA).inpaint(images, masks), Repairer(net).inpaint(images, masks)
    assert (gpu[~masks] == images[~masks]).all()
    assert np.abs(gpu.astype(int) - cpu.astype(int)).max() <= 1
