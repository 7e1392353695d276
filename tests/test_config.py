"""params.yaml is read once into a typed config with named profiles."""

import pytest
import yaml

from gandefect.config import DEFAULTS, Config, load_config
from gandefect.data import conditions
from gandefect.detect import families as detector_families
from gandefect.errors import ConfigError
from gandefect.gan import families as gan_families
from gandefect.gan import losses
from tests.conftest import REPO, write_params


def test_profiles_override_the_base_values():
    default = load_config(REPO / "params.yaml", "default")
    tiny = load_config(REPO / "params.yaml", "tiny")
    assert default.data.max_images is None and tiny.data.max_images == 400
    assert tiny.data.image_size == default.data.image_size
    assert tiny.params_hash() != default.params_hash()


def test_invalid_values_and_unknown_profiles_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        load_config(write_params(tmp_path), "huge")
    with pytest.raises(ConfigError, match="data.splits"):
        load_config(write_params(tmp_path, data={"splits": {"train": 0.9, "val": 0.2, "test": 0.1}}))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("profile", sorted(yaml.safe_load((REPO / "params.yaml").read_text())["profiles"]))
def test_params_name_only_registered_losses_and_detector_families(profile):
    cfg = load_config(REPO / "params.yaml", profile)
    assert losses.selected(cfg.gan.losses)
    assert losses.selected([cfg.repair.adversarial_loss], "repair.adversarial_loss")
    assert {*cfg.gan.generator_steps_by_loss} <= {*losses.REGISTRY, *gan_families.selected(cfg.gan.families)}
    assert detector_families.selected(cfg.detect.families)


@pytest.mark.parametrize("size", [20, 24, 28, 32, 48, 64, 96, 128])
def test_sizes_the_models_take_are_accepted(tmp_path, size):
    assert load_config(write_params(tmp_path, data={"image_size": size, "mode": "RGB"})).data.image_size == size


@pytest.mark.parametrize(
    ("size", "why"),
    [
        (30, "would start from 15 px doubled 1 time"),
        (27, "would start from 27 px with no doubling"),
        (100, "would start from 25 px doubled 2 time"),
    ],
)
def test_a_size_the_models_cannot_take_fails_at_config_time_with_the_reason(tmp_path, size, why):
    with pytest.raises(ConfigError, match=rf"data.image_size {size}: the generators build an image by doubling") as err:
        load_config(write_params(tmp_path, data={"image_size": size}))
    assert why in str(err.value) and "Nearby sizes that work" in str(err.value)


def test_a_size_below_the_spectral_window_fails_at_config_time(tmp_path):
    with pytest.raises(ConfigError, match="smaller than the spectral detector's window"):
        load_config(write_params(tmp_path, data={"image_size": 10}))


def test_a_profile_removes_one_gate_bound_with_null_and_keeps_the_others():
    base, tiny = (load_config(REPO / "params.yaml", p).gates.repairer for p in ("default", "tiny"))
    assert base.ceiling == {"fid_ratio": 1.0, "outside_mask_change": 0, "repaired_fid_ratio": 0.7}
    assert tiny.ceiling == {"outside_mask_change": 0}  # tiny repairers are not judged on FID; the composite rule stays
    assert tiny.floor == {} and tiny.margin == 1.0


def test_the_zoo_is_submitted_longest_first():
    """A pool starts with the GAN of the most discriminator steps (updates x critic steps), so the
    longest one never starts last; every member is there once."""
    from gandefect.lifecycle.zoo import zoo_members
    from gandefect.stages.gans import longest_first

    cfg = load_config(REPO / "params.yaml", "default")
    order = longest_first(cfg, zoo_members(cfg))
    assert sorted(order) == sorted(zoo_members(cfg))
    assert order[0] == "wgan-gp"  # 1000 updates x 5 critic steps
    steps = [cfg.gan.steps_for(n) * (losses.get(n).n_critic if n in losses.REGISTRY else 1) for n in order]
    assert steps == sorted(steps, reverse=True)


def _leaves(mapping: dict, prefix: str = ""):
    for key, value in mapping.items():
        if isinstance(value, dict) and value and key not in ("splits",):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_params_yaml_writes_no_value_that_differs_from_the_typed_default():
    """The typed config's defaults are the values: what params.yaml writes out (outside its
    profiles) is there for a user to change, and equals the default until they do."""
    written = {k: v for k, v in yaml.safe_load((REPO / "params.yaml").read_text()).items() if k != "profiles"}
    defaults = dict(_leaves({"profile": Config().profile, **DEFAULTS}))
    differs = {k: (v, defaults.get(k, "no such setting")) for k, v in _leaves(written) if defaults.get(k, ...) != v}
    assert not differs, f"params.yaml (written, default): {differs}"


def test_lists_with_a_registry_default_to_every_registered_entry():
    cfg = load_config(REPO / "params.yaml", "default")
    assert cfg.gan.families is None and gan_families.selected(None) == list(gan_families.FAMILIES)
    assert cfg.detect.families is None and detector_families.selected(None) == list(detector_families.FAMILIES)
    assert cfg.detect.wild.conditions is None and conditions.evaluated(cfg.detect.wild) == list(conditions.CONDITIONS)
    assert set(cfg.detect.wild.gated) < set(conditions.CONDITIONS)
    assert {f"fpr_real_{c}" for c in cfg.detect.wild.gated} <= set(cfg.gates.ceiling)


def test_an_unknown_condition_or_family_is_named_with_the_known_ones(tmp_path):
    cfg = load_config(write_params(tmp_path, detect={"wild": {"conditions": ["png", "jpeg10"], "gated": ["png"]}}))
    with pytest.raises(ConfigError, match=r"detect.wild.conditions: unknown condition jpeg10; known: png, jpeg95"):
        conditions.evaluated(cfg.detect.wild)
    cfg = load_config(write_params(tmp_path, detect={"wild": {"conditions": ["png", "jpeg95"], "gated": ["png"]}}))
    assert conditions.evaluated(cfg.detect.wild) == ["png", "jpeg95"]
    with pytest.raises(ConfigError, match="must be a subset"):
        load_config(write_params(tmp_path, detect={"wild": {"conditions": ["png"], "gated": ["jpeg95"]}}))
    with pytest.raises(ConfigError, match="gan.families: unknown family stylegan; known: vae, mlpgan"):
        gan_families.selected(["stylegan"])


def test_a_profile_mapping_merges_into_a_default_the_base_does_not_write():
    rgb64 = load_config(REPO / "params.yaml", "rgb64").gates.repairer
    assert rgb64.ceiling == {"fid_ratio": 1.0, "outside_mask_change": 0, "repaired_fid_ratio": 0.9}
