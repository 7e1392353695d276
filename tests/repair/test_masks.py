"""Repair masks: round trip through PNG, clear errors for bad masks, the area cap."""

import numpy as np
import pytest
from PIL import Image

from gandefect.data.spliced import MaskSpec, random_mask
from gandefect.errors import BadInputError
from gandefect.repair.masks import cap_area, check_mask, mask_png, read_mask


def test_masks_round_trip_through_png(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(20):
        mask, _ = random_mask(rng, 28, 28, MaskSpec(0.05, 0.4))
        path = tmp_path / f"m{i}.png"
        path.write_bytes(mask_png(mask))
        assert np.array_equal(read_mask(path, (28, 28)), mask)


def test_a_colour_or_gray_mask_image_is_read_at_mid_gray(tmp_path):
    arr = np.zeros((28, 28, 3), np.uint8)
    arr[5:10, 5:10] = (200, 200, 200)
    arr[12:14, 12:14] = (100, 100, 100)  # darker than mid-gray: kept
    Image.fromarray(arr, "RGB").save(tmp_path / "m.jpg", quality=100)
    mask = read_mask(tmp_path / "m.jpg", (28, 28))
    assert mask[5:10, 5:10].all() and not mask[12:14, 12:14].any() and mask.sum() == 25


@pytest.mark.parametrize(
    "mask,message",
    [
        (np.zeros((28, 28), bool), "empty"),
        (np.ones((28, 28), bool), "whole image"),
        (np.ones((20, 28), bool), "20x... wrong"),
        (np.ones((28, 28, 3), bool), "2-D"),
    ],
)
def test_bad_masks_get_clear_errors(mask, message):
    with pytest.raises(BadInputError) as err:
        check_mask(mask, (28, 28))
    text = str(err.value)
    if message.startswith("20x"):
        assert "mask is 28x20 but the image is 28x28" in text
    else:
        assert message in text


def test_unreadable_or_missing_mask_files_get_clear_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(BadInputError, match="not a readable image"):
        read_mask(tmp_path / "bad.png", (28, 28))
    with pytest.raises(BadInputError, match="no such file"):
        read_mask(tmp_path / "missing.png", (28, 28))


def test_cap_area_keeps_the_highest_scoring_pixels():
    rng = np.random.default_rng(1)
    scores = rng.random((28, 28))
    mask = np.ones((28, 28), bool)
    capped = cap_area(mask, scores, 0.25)
    assert capped.sum() == int(0.25 * 784)
    assert scores[capped].min() >= scores[~capped].max()
    small = np.zeros((28, 28), bool)
    small[:3, :3] = True
    assert np.array_equal(cap_area(small, scores, 0.25), small)
