"""The device setting: where models train, are evaluated and served (CPU here; the CUDA path is
covered by tests/test_cuda.py on a machine with a GPU)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import yaml

from gandefect import hardware
from gandefect.config import CNNDetectorConfig, load_config
from gandefect.detect.cnn import CNNDetector
from gandefect.detect.common import Labeled
from gandefect.errors import BadInputError, ConfigError
from gandefect.gan import losses
from gandefect.gan.models import DCGANConfig
from gandefect.gan.trainer import GANTrainer, TrainSettings
from tests.conftest import REPO, run_cli


def _params(tmp_path, **top) -> object:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(profile="tiny", **top)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_cpu_is_cpu_and_auto_takes_a_gpu_only_where_torch_sees_one():
    assert hardware.resolve("cpu") == torch.device("cpu")
    assert hardware.resolve("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BadInputError, match="device: cuda was asked for, but torch .* sees no CUDA GPU"):
        hardware.resolve("cuda")
    assert hardware.resolve("auto") == torch.device("cpu")  # auto falls back, never fails


def test_config_names_an_unknown_device(tmp_path):
    with pytest.raises(ConfigError, match="device"):
        load_config(_params(tmp_path, device="tpu"))
    assert load_config(_params(tmp_path)).device == "auto"


def test_a_stage_asked_for_cuda_without_one_stops_with_the_reason(tmp_path, monkeypatch):
    _params(tmp_path, device="cuda")
    for name, value in {"NO_COLOR": "1", "COLUMNS": "200", "CUDA_VISIBLE_DEVICES": ""}.items():  # no GPU, also on a GPU machine
        monkeypatch.setenv(name, value)
    result = run_cli(tmp_path, "train-repairer")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "device: cuda was asked for" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_detector_computes_where_it_is_put_and_is_stored_without_it():
    det = CNNDetector(channels=1).on(torch.device("meta"))
    restored = pickle.loads(pickle.dumps(det))
    assert det.device == torch.device("meta")
    assert restored.device == torch.device("cpu")  # a model pickled on a GPU machine loads anywhere


def test_trained_models_come_back_on_the_cpu():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 16, 16), dtype=np.uint8)
    data = Labeled(images, np.repeat([0, 1], 32), np.repeat(["real", "g"], 32))
    det = CNNDetector(CNNDetectorConfig(width=8, epochs=1, batch_size=16), channels=1).on(hardware.resolve("cpu"))
    det.fit(data)
    assert {p.device.type for p in det.net.parameters()} == {"cpu"}
    trainer = GANTrainer(losses.get("nonsaturating"), DCGANConfig(image_size=16, g_width=4, d_width=4),
                         TrainSettings(generator_steps=2, batch_size=8, early_epochs=(), device=hardware.CPU))
    trainer.fit(torch.rand(32, 1, 16, 16) * 2 - 1)
    assert {p.device.type for p in trainer.G.parameters()} == {"cpu"}
