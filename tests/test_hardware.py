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
    for name, value in {
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "CUDA_VISIBLE_DEVICES": "",
    }.items():  # no GPU, also on a GPU machine
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
    trainer = GANTrainer(
        losses.get("nonsaturating"),
        DCGANConfig(image_size=16, g_width=4, d_width=4),
        TrainSettings(generator_steps=2, batch_size=8, early_epochs=(), device=hardware.CPU),
    )
    trainer.fit(torch.rand(32, 1, 16, 16) * 2 - 1)
    assert {p.device.type for p in trainer.G.parameters()} == {"cpu"}


def _conv_dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    """Records the dtype every convolution of `module` computes in (hooks stay on the module)."""
    seen: set[torch.dtype] = set()
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


def test_precision_forces_either_path_on_any_machine_and_auto_follows_the_hardware(tmp_path):
    cuda_like = torch.device("cuda")
    assert hardware.use_bf16("fp32") is False and hardware.use_bf16("fp32", cuda_like) is False
    assert hardware.use_bf16("bf16") is True and hardware.use_bf16("bf16", on_cpu=False) is True
    assert hardware.use_bf16("auto") == hardware.bf16_ok(hardware.CPU)
    assert hardware.use_bf16("auto", hardware.CPU, on_cpu=False) is False  # the zoo: bf16 on a GPU only
    with pytest.raises(BadInputError, match="precision must be one of auto, fp32, bf16"):
        hardware.use_bf16("fp16")
    with pytest.raises(ConfigError, match="precision"):
        load_config(_params(tmp_path, precision="fp16"))
    assert load_config(_params(tmp_path)).precision == "auto"


@pytest.mark.parametrize(
    ("onednn", "avx512_bf16", "amx", "native"),
    [(True, False, False, False), (True, True, False, True), (True, False, True, True), (False, True, True, False)],
)
def test_auto_takes_bf16_on_a_cpu_only_where_its_instructions_are_native(monkeypatch, onednn, avx512_bf16, amx, native):
    # oneDNN says yes on any AVX-512 CPU (emulated bf16, slower than float32): the instructions decide
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    hardware._cpu_bf16.cache_clear()
    try:
        assert hardware.bf16_ok(hardware.CPU) is native
        assert hardware.use_bf16("auto") is native
    finally:
        hardware._cpu_bf16.cache_clear()


@pytest.mark.parametrize(("flags", "native"), [({"avx512f", "avx512bw"}, False), ({"avx512f", "amx_bf16"}, True)])
def test_a_torch_without_the_instruction_probes_reads_the_cpu_flags(monkeypatch, flags, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: flags)
    hardware._cpu_bf16.cache_clear()
    try:
        assert hardware.bf16_ok(hardware.CPU) is native
    finally:
        hardware._cpu_bf16.cache_clear()


@pytest.mark.parametrize("bf16", [False, True])
def test_the_cnn_detector_trains_in_the_forced_precision_and_stays_float32(bf16):
    """Either numeric path on any CPU (bf16 is emulated where the CPU lacks it: a small model)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 16, 16), dtype=np.uint8)
    data = Labeled(images, np.repeat([0, 1], 32), np.repeat(["real", "g"], 32))
    det = CNNDetector(CNNDetectorConfig(width=8, epochs=1, batch_size=16), channels=1).on(hardware.CPU, bf16)
    computed = _conv_dtypes(det.net)
    det.fit(data)
    assert computed == {torch.bfloat16 if bf16 else torch.float32}
    assert {p.dtype for p in det.net.parameters()} == {torch.float32}
    computed.clear()
    p = det.score(images)
    assert computed == {torch.float32} and np.isfinite(p).all()  # scored (and served) in float32
    stored = pickle.loads(pickle.dumps(CNNDetector(channels=1).on(hardware.CPU, bf16)))
    assert stored.bf16 is False  # the training machine's choice is not stored with the model


@pytest.mark.parametrize("bf16", [False, True])
def test_a_gan_trains_in_the_forced_precision_on_the_cpu(bf16):
    trainer = GANTrainer(
        losses.get("wgan-gp"),
        DCGANConfig(image_size=16, g_width=4, d_width=4),
        TrainSettings(generator_steps=2, batch_size=8, early_epochs=(), device=hardware.CPU, bf16=bf16),
    )
    computed = _conv_dtypes(trainer.D)
    result = trainer.fit(torch.rand(32, 1, 16, 16) * 2 - 1)
    assert result.generator_steps == 2
    assert torch.bfloat16 in computed if bf16 else computed == {torch.float32}
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())


def test_a_detector_trained_on_prefetched_batches_equals_one_trained_on_batches_made_in_turn(monkeypatch):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (96, 16, 16), dtype=np.uint8)
    data = Labeled(images, np.repeat([0, 1], 48), np.repeat(["real", "g"], 48))

    def trained() -> list[torch.Tensor]:
        det = CNNDetector(CNNDetectorConfig(width=8, epochs=2, batch_size=16), channels=1, seed=4)
        return [p.detach().clone() for p in det.fit(data).net.parameters()]

    monkeypatch.setattr(hardware, "batches_ahead", lambda device: True)
    ahead = trained()
    monkeypatch.setattr(hardware, "batches_ahead", lambda device: False)
    monkeypatch.setattr(hardware, "prefetched", lambda items, depth=2: pytest.fail("made ahead when told not to"))
    in_turn = trained()
    assert all(torch.equal(a, b) for a, b in zip(ahead, in_turn, strict=True))


def test_batches_are_made_ahead_on_a_gpu_or_where_no_thread_computes_on_a_core(monkeypatch):
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(hardware, "_own_cores", None)
    threads = torch.get_num_threads()
    try:
        hardware.setup("cpu", threads=4)
        assert not hardware.batches_ahead(hardware.CPU)  # torch computes on every core
        assert hardware.batches_ahead(torch.device("cuda"))
        hardware.setup("cpu", threads=1)
        assert hardware.batches_ahead(hardware.CPU)  # three idle cores
        hardware.setup("cpu", threads=1, share=True)
        assert not hardware.batches_ahead(hardware.CPU)  # a worker whose siblings use the other three
    finally:
        hardware.setup("cpu", threads=threads)


def test_prefetched_keeps_the_order_raises_the_makers_error_and_stops_when_left_early():
    assert list(hardware.prefetched(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("no such image")

    with pytest.raises(ValueError, match="no such image"):
        list(hardware.prefetched(failing()))
    made = []

    def counted():
        for i in range(1000):
            made.append(i)
            yield i

    items = hardware.prefetched(counted(), depth=2)
    assert next(items) == 0
    items.close()  # the thread stops: it does not make the other 999
    assert len(made) <= 4
