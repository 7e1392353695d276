"""Both detector families behind one interface, on synthetic images with a known up-sampling trace."""

import io
import pickle

import numpy as np
import pytest
import torch

from gandefect.config import CNNDetectorConfig, SpectralDetectorConfig
from gandefect.detect.cnn import CNNConfig, CNNDetector, RadialLogit
from gandefect.detect.common import Detector, Labeled, choose_threshold
from gandefect.detect.spectral import SpectralConfig, SpectralDetector
from gandefect.evaluate.detection import ece, evaluate


def synthetic(n: int, seed: int, rgb: bool = False) -> Labeled:
    """Real: smooth random blobs. Fake: the same kind of blobs with a faint 2-pixel checkerboard,
    the trace a stride-2 transposed convolution leaves."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, 7, 7))
    smooth = np.kron(coarse, np.ones((4, 4)))  # 28x28, blocky but band-limited enough
    checker = (np.indices((28, 28)).sum(0) % 2) * 2 - 1
    labels = np.arange(n) % 2
    images = np.clip(smooth + labels[:, None, None] * 12 * checker, 0, 255).astype(np.uint8)
    if rgb:
        images = np.repeat(images[..., None], 3, axis=-1)
    gens = np.where(labels == 1, "toy", "real")
    return Labeled(images, labels, gens)


FAMILIES = {
    "cnn": lambda ch: CNNDetector(
        CNNDetectorConfig(width=8, epochs=2, batch_size=32, p_process=0.0, focal_gamma=0.0), channels=ch
    ),
    "spectral": lambda ch: SpectralDetector(SpectralDetectorConfig(windows_per_image=2, p_process=0.0)),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rgb", [False, True])
def test_detector_interface(family, rgb):
    train, val, test = synthetic(400, 0, rgb), synthetic(100, 1, rgb), synthetic(60, 2, rgb)
    det = FAMILIES[family](3 if rgb else 1).fit(train).calibrate(val)
    p = det.score(test.images)
    maps = det.defect_map(test.images)
    assert p.shape == (60,) and np.all((p >= 0) & (p <= 1))
    assert maps.shape == (60, 28, 28) and maps.min() >= 0 and maps.max() <= 1
    assert 0 < det.threshold < 1 and det.trained_on == ["toy"]
    assert det.predict(test.images).shape == (60,)
    metrics, _ = evaluate(det, test, ["toy"])
    assert metrics["auc_seen"] > 0.9, metrics  # the trace is learnable by both families


class OverConfident(Detector):
    """Right on average but far too sure of itself."""

    family = "toy"

    def __init__(self, signal):
        super().__init__()
        self.signal = signal

    def fit(self, train, progress=None):
        return self

    def raw_scores(self, images):
        return 25.0 * self.signal[: len(images)]

    def raw_maps(self, images):
        return np.zeros(images.shape[:3])


def test_calibration_lowers_the_ece_of_an_overconfident_model():
    rng = np.random.default_rng(0)
    labels = np.arange(2000) % 2
    signal = (labels - 0.5) * 0.6 + rng.normal(0, 0.5, 2000)  # overlapping classes
    data = Labeled(np.zeros((2000, 4, 4), np.uint8), labels, np.where(labels, "toy", "real"))
    det = OverConfident(signal)
    before = ece(det.score(data.images), labels)
    det.calibrate(data)
    after = ece(det.score(data.images), labels)
    assert after <= before and after < 0.05 < before


def test_threshold_maximizes_balanced_accuracy():
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    t = choose_threshold(p, labels)
    assert 0.3 < t <= 0.6


def test_the_served_threshold_keeps_every_conditions_real_images_under_the_target():
    from gandefect.detect.common import threshold_for_fpr

    rng = np.random.default_rng(0)
    groups = np.repeat(["png", "jpeg75", "resize"], 200)
    labels = np.tile(np.r_[np.zeros(100, int), np.ones(100, int)], 3)
    shift = np.repeat([0.0, 0.1, 0.3], 200)  # processed reals score higher: resize the most
    p = np.clip(rng.uniform(0, 0.5, 600) + shift + 0.5 * labels, 0, 1)
    t = threshold_for_fpr(p, labels, groups, 0.05)
    for g in ("png", "jpeg75", "resize"):
        real = p[(groups == g) & (labels == 0)]
        assert (real >= t).mean() <= 0.05
    worst = p[(groups == "resize") & (labels == 0)]
    assert (worst >= np.nextafter(t, 0) - 1e-9).mean() > 0.04  # the lowest such threshold, set by resize


def test_calibrating_on_a_mix_sets_the_threshold_by_the_rule():
    train, val = synthetic(200, 0), synthetic(100, 1)
    det = FAMILIES["spectral"](1).fit(train)
    groups = np.repeat(["a", "b"], 50)  # two conditions, each with both classes
    det.calibrate(val, groups, fpr_target=0.02)
    p = det.score(val.images)
    for g in ("a", "b"):
        assert (p[(groups == g) & (val.labels == 0)] >= det.threshold).mean() <= 0.02


def test_a_warm_started_cnn_begins_from_its_predecessor_and_keeps_what_it_knew():
    train = synthetic(400, 0)
    old = FAMILIES["cnn"](1).fit(train)
    new = CNNDetector(CNNDetectorConfig(width=8, epochs=1, batch_size=32, p_process=0.0, focal_gamma=0.0), seed=5)
    assert new.start_from(old)
    before = {k: v.clone() for k, v in new.net.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in old.net.state_dict().items())
    renamed = Labeled(train.images, train.labels, np.where(train.labels == 1, "toy2", "real"))
    new.fit(renamed)
    assert new.trained_on == ["toy", "toy2"]  # its weights have seen the predecessor's generators too
    assert not all(torch.equal(before[k], v) for k, v in new.net.state_dict().items())
    # a different shape cannot start from it
    assert not CNNDetector(CNNDetectorConfig(width=16)).start_from(old)
    assert not CNNDetector(CNNDetectorConfig(width=8), channels=3).start_from(old)


@pytest.mark.parametrize("bf16", [False, True])  # bf16 forced: emulated where the CPU lacks it
def test_distillation_keeps_a_fine_tuned_cnn_near_its_champion_on_what_the_champion_knew(bf16):
    """Learning without forgetting: fine-tuned on a new family, the candidate's scores on real
    images and the old generator move less from the champion's with the champion's outputs as
    soft targets than without them, and the teacher is not kept inside the model."""
    old_data = synthetic(400, 0)
    old = FAMILIES["cnn"](1).fit(old_data)
    rng = np.random.default_rng(3)
    new = synthetic(400, 1)
    noisy = np.clip(
        new.images.astype(int) + rng.integers(-40, 41, new.images.shape) * new.labels[:, None, None], 0, 255
    )
    new = Labeled(noisy.astype(np.uint8), new.labels, np.where(new.labels == 1, "grain", "real"))
    mixed = Labeled(
        np.concatenate([old_data.images[:100], new.images]),
        np.concatenate([old_data.labels[:100], new.labels]),
        np.concatenate([old_data.generators[:100], new.generators]),
    )
    probe = synthetic(200, 9).images
    drift = {}
    for weight in (0.0, 4.0):
        cand = CNNDetector(
            CNNDetectorConfig(
                width=8, epochs=3, batch_size=32, lr=5e-3, p_process=0.0, focal_gamma=0.0, distill=weight
            ),
            seed=5,
        ).on(torch.device("cpu"), bf16)
        assert cand.start_from(old)
        cand.fit(mixed)
        assert not hasattr(cand, "_teacher")
        drift[weight] = np.abs(cand.raw_scores(probe) - old.raw_scores(probe)).mean()
    assert drift[4.0] < 0.7 * drift[0.0], drift


def test_a_detector_pickled_with_the_old_settings_objects_still_loads():
    """Champions registered before the config sections were the detectors' settings keep loading."""
    old_cnn = CNNDetector()
    old_cnn.cfg = CNNConfig(channels=1, width=8, epochs=2, seed=7)
    del old_cnn.channels, old_cnn.seed
    old_spectral = SpectralDetector()
    old_spectral.cfg = SpectralConfig(C=0.5, seed=9)
    del old_spectral.seed
    for det in (old_cnn, old_spectral):
        buf = io.BytesIO()
        torch.save(det, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        assert type(loaded.cfg).__name__.endswith("DetectorConfig")
    assert (loaded.seed, loaded.cfg.C) == (9, 0.5)
    buf = io.BytesIO()
    torch.save(old_cnn, buf)
    buf.seek(0)
    cnn = torch.load(buf, weights_only=False)
    assert (cnn.channels, cnn.seed, cnn.cfg.width, cnn.cfg.epochs) == (1, 7, 8, 2)


def test_family_balanced_drawing_gives_each_generator_family_an_equal_share_of_the_fakes():
    from gandefect.detect.cnn import _family_balanced

    generators = np.array(["real"] * 100 + ["lsgan"] * 600 + ["hinge"] * 600 + ["ddpm"] * 50 + ["ddpm-aligned"] * 50)
    families = np.array(["real"] * 100 + ["dcgan"] * 1200 + ["diffusion"] * 100)
    data = Labeled(np.zeros((1400, 4, 4), np.uint8), (generators != "real").astype(int), generators, families)
    p = _family_balanced(data)
    share = {f: p[families == f].sum() for f in ("real", "dcgan", "diffusion")}
    assert share == pytest.approx({"real": 0.5, "dcgan": 0.25, "diffusion": 0.25})  # 12x the samples, the same share
    rng = np.random.default_rng(0)
    drawn = families[rng.choice(len(p), 20_000, p=p)]
    assert abs((drawn == "diffusion").mean() - 0.25) < 0.02
    # a warm start's new generators (here ddpm and its aligned set) take new_share of the fakes
    p = _family_balanced(data, np.isin(generators, ["ddpm", "ddpm-aligned"]), 0.6)
    share = {f: p[families == f].sum() for f in ("real", "dcgan", "diffusion")}
    assert share == pytest.approx({"real": 0.5, "dcgan": 0.2, "diffusion": 0.3})
    assert p[generators == "lsgan"].sum() == pytest.approx(0.1)
    det = CNNDetector(CNNDetectorConfig(width=8, epochs=1, batch_size=64, balance="family"), channels=1)
    det.fit(synthetic(200, 0, False))
    assert det.trained_on == ["toy"]


def test_the_radial_head_calls_every_direction_away_from_the_real_centre_generated():
    """A linear head's logit is antisymmetric about its boundary, so one of two opposite departures
    from the real images reads as more real than they are; the radial head's grows both ways."""
    torch.manual_seed(0)
    head = RadialLogit(32, 8)
    with torch.no_grad():
        centre = torch.linalg.lstsq(head.project.weight, -head.project.bias[:, None]).solution[:, 0]
        at_centre = head(centre[None])[0, 0]
        for d in torch.randn(20, 32):
            near, far, opposite = (head(torch.stack([centre + t * d]))[0, 0] for t in (0.5, 1.0, -1.0))
            assert at_centre < near < far  # the score rises with the distance ...
            assert torch.isclose(far, opposite, rtol=1e-4)  # ... whichever way the image departs
    assert float(at_centre) == pytest.approx(-head.radius.item(), abs=1e-4)


def test_the_cnn_head_follows_the_setting_and_a_warm_start_needs_the_same_head():
    assert (
        CNNDetector(CNNDetectorConfig(width=8, head="radial")).net.radial and not CNNDetector().net.radial
    )  # linear by default
    linear = CNNDetector(CNNDetectorConfig(width=8, head="linear"))
    assert not linear.net.radial and isinstance(linear.net.image_head[-1], torch.nn.Linear)
    assert not CNNDetector(CNNDetectorConfig(width=8, head="radial")).start_from(linear)
    assert CNNDetector(CNNDetectorConfig(width=8, head="linear")).start_from(linear)
    old = pickle.loads(pickle.dumps(linear))
    del old.cfg.__dict__["head"]  # a champion pickled before the setting existed
    assert not old.net.radial and not CNNDetector(CNNDetectorConfig(width=8, head="radial")).start_from(old)
    assert old.score(synthetic(4, 0).images).shape == (4,)


def test_a_cnn_of_several_members_serves_their_mean_and_each_member_learns():
    cfg = CNNDetectorConfig(width=8, epochs=1, batch_size=32, p_process=0.0, focal_gamma=0.0, members=2)
    det = CNNDetector(cfg)
    first, second = det.net.members
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))  # own initialisations
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in det.net.members]
    data = synthetic(200, 0)
    det.fit(data)
    for m, b in zip(det.net.members, before):
        assert not all(torch.equal(b[k], v) for k, v in m.state_dict().items())
    x = torch.from_numpy(data.images[:8].astype(np.float32) / 127.5 - 1)[:, None]
    with torch.no_grad():
        (m1, s1), (m2, s2) = (m(x) for m in det.net.members)
        mean_map, mean_score = det.net(x)
    assert torch.allclose(mean_score, (s1 + s2) / 2, atol=1e-6) and torch.allclose(mean_map, (m1 + m2) / 2, atol=1e-6)
    assert pickle.loads(pickle.dumps(det)).score(data.images[:4]).shape == (4,)
    # a warm start needs as many members
    assert not CNNDetector(cfg.model_copy(update={"members": 1})).start_from(det)
    assert CNNDetector(cfg).start_from(det)
