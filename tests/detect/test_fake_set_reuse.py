"""A sampled fake set is reused, not sampled again, exactly when what it was made from is
unchanged and it is whole on disk."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gandefect.data.fakes import write_fake_set
from gandefect.gan import families
from gandefect.gan.models import DCGANConfig
from gandefect.stages.detectors.fakes import _MadeFrom, refines


def images(seed: int, n: int = 12) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(a, "L") for a in rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)]


def test_a_set_is_reused_only_with_its_key_and_whole(tiny_cfg):
    made = _MadeFrom(tiny_cfg)
    key = made.key("models:/gandefect-generator-hinge/1@run-a", "cpu", 12, 17, "dcgan")
    written = made.remember(write_fake_set(tiny_cfg, "hinge", images(0), "generator:hinge", family="dcgan"), key)
    reused = made.reuse("hinge", "dcgan", key)
    assert reused is not None and (reused.count, reused.path) == (written.count, written.path)
    # another generator run, another count, another device: sampled again
    for other in (
        made.key("models:/gandefect-generator-hinge/1@run-b", "cpu", 12, 17, "dcgan"),
        made.key("models:/gandefect-generator-hinge/1@run-a", "cpu", 13, 17, "dcgan"),
        made.key("models:/gandefect-generator-hinge/1@run-a", "cuda", 12, 17, "dcgan"),
    ):
        assert other != key and made.reuse("hinge", "dcgan", other) is None
    # a set changed on disk (its manifest rewritten, or an image gone) is not trusted either
    next(iter((written.path / "images").iterdir())).unlink()
    assert made.reuse("hinge", "dcgan", key) is None
    write_fake_set(tiny_cfg, "hinge", images(1), "generator:hinge", family="dcgan")  # a set not remembered
    assert made.reuse("hinge", "dcgan", key) is None
    assert made.reuse("never-written", "dcgan", key) is None


@pytest.mark.parametrize("name", sorted(families.FAMILIES))
def test_the_members_that_get_an_aligned_set_are_those_that_can_refine(name):
    family = families.FAMILIES[name]
    cfg = DCGANConfig()
    if family.kind == "vae":
        model = families.VAE(cfg)
    elif family.kind == "diffusion":
        model = family.generator(cfg, width=family.width, sample_steps=family.sample_steps)
    else:
        model = family.generator(cfg)
    assert refines(name) == hasattr(model, "refine")


def test_a_logged_model_or_run_artifact_is_named_by_its_own_uri(tiny_cfg):
    made = _MadeFrom(tiny_cfg)
    for uri in ("models:/m-0123456789abcdef", "runs:/0123456789abcdef/early_generator_epoch1"):
        assert made.model_id(uri) == uri  # the early generators: unique already, no registry lookup
