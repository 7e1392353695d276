"""Each in-the-wild condition makes the file a client would send: the format, quality and size it names."""

import io

import numpy as np
import pytest
from PIL import Image

from gandefect.data import conditions
from gandefect.data.history import jpeg_quality


def digits(n: int = 6, rgb: bool = False) -> np.ndarray:
    """Bright strokes on black, like the default data."""
    rng = np.random.default_rng(0)
    x = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        r, c = rng.integers(6, 14, 2)
        x[i, r : r + 10, c : c + 3] = 255
        x[i, r + 4 : r + 6, c : c + 9] = 200
    return np.repeat(x[..., None], 3, -1) if rgb else x


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    "name,quality",
    [
        ("jpeg95", 95),
        ("jpeg90", 90),
        ("jpeg75", 75),
        ("jpeg60", 60),
        ("jpeg50", 50),
        ("jpeg90x75", 75),
        ("rgbjpeg85", 85),
    ],
)
def test_a_jpeg_condition_sends_jpeg_bytes_of_that_quality(name, quality):
    for data in conditions.client_bytes(digits(), name):
        im = opened(data)
        assert im.format == "JPEG" and jpeg_quality(im) == (quality, True)
        assert im.mode == ("RGB" if name.startswith("rgb") else "L")
    if name == "rgbjpeg85":  # chroma sub-sampled 4:2:0, as cameras and browsers save
        layers = opened(conditions.client_bytes(digits(1), name)[0]).layer
        assert layers[0][1:3] == (2, 2) and layers[1][1:3] == (1, 1)


def test_double_jpeg_is_two_compressions_not_one():
    once = conditions.apply(digits(), "jpeg75")
    twice = conditions.apply(digits(), "jpeg90x75")
    assert not np.array_equal(once, twice)


def test_png_is_lossless_and_webp_is_webp():
    x = digits()
    assert np.array_equal(conditions.apply(x, "png"), x)
    assert all(opened(b).format == "PNG" for b in conditions.client_bytes(x, "png"))
    assert all(opened(b).format == "WEBP" for b in conditions.client_bytes(x, "webp80"))
    assert not np.array_equal(conditions.apply(x, "webp80"), x)  # lossy


@pytest.mark.parametrize("name", ["blur0.5", "blur1.0", "resize", "noise"])
def test_pixel_conditions_send_a_png_of_the_same_size_with_other_pixels(name):
    x = digits()
    for data in conditions.client_bytes(x, name):
        assert opened(data).format == "PNG" and opened(data).size == (28, 28)
    changed = conditions.apply(x, name)
    assert changed.shape == x.shape and not np.array_equal(changed, x)


def test_blur_strength_orders_the_loss_of_detail():
    x = digits().astype(float)
    err = {s: np.abs(conditions.apply(digits(), s).astype(float) - x).mean() for s in ("blur0.5", "blur1.0")}
    assert 0 < err["blur0.5"] < err["blur1.0"]


def test_up2_sends_twice_the_size_and_the_service_path_brings_it_back():
    x = digits()
    assert all(opened(b).size == (56, 56) for b in conditions.client_bytes(x, "up2"))
    back = conditions.apply(x, "up2")
    assert back.shape == x.shape and np.abs(back.astype(float) - x).mean() < 8


def test_noise_is_mild_and_seeded():
    x = digits()
    a, b = conditions.apply(x, "noise", seed=3), conditions.apply(x, "noise", seed=3)
    assert np.array_equal(a, b) and not np.array_equal(a, conditions.apply(x, "noise", seed=4))
    assert 1.5 < np.std(a.astype(float) - x) < 4.5


def test_rgb_images_take_every_condition():
    x = digits(3, rgb=True)
    for name in conditions.CONDITIONS:
        assert conditions.apply(x, name).shape == x.shape, name


def test_training_chains_are_random_processings_of_both_kinds():
    rng = np.random.default_rng(0)
    formats = {opened(conditions.random_chain(conditions.pil(digits(1)[0]), rng)).format for _ in range(60)}
    assert formats == {"JPEG", "WEBP", "PNG"}
    out = conditions.augment(digits(40), np.random.default_rng(1), p=0.5)
    changed = [not np.array_equal(a, b) for a, b in zip(out, digits(40))]
    assert 8 < sum(changed) < 32 and out.dtype == np.uint8


def test_an_unknown_condition_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown condition 'jpeg10'"):
        conditions.get("jpeg10")


def test_wild_sets_built_in_worker_processes_equal_the_threaded_build():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from gandefect.detect.common import Labeled
    from gandefect.evaluate import wild
    from gandefect.stages.detectors import envelope_for

    rng = np.random.default_rng(0)
    data = Labeled(
        rng.integers(0, 256, (24, 28, 28), dtype=np.uint8),
        np.r_[np.zeros(12), np.ones(12)].astype(int),
        np.array(["real"] * 12 + ["gan"] * 12),
    )
    names = ["png", "jpeg75", "blur1.0", "resize", "noise"]
    threaded = wild.build(data, names, "crop", envelope_for(["jpeg75"]))
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pooled = wild.build(data, names, "crop", envelope_for(["jpeg75"]), pool)
    for name in names:
        assert np.array_equal(threaded.inputs[name], pooled.inputs[name]), name
        assert np.array_equal(threaded.inside[name], pooled.inside[name]), name
    assert not threaded.inside["resize"][:12].all()  # outside the envelope: the comparison can fail
