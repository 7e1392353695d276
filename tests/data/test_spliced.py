"""The spliced-defect benchmark's masks and composites."""

import numpy as np
import pytest

from gandefect.data.spliced import MaskSpec, make_spliced, random_mask, splice


@pytest.mark.parametrize("size", [28, 32, 64])
def test_masks_are_binary_and_within_the_area_bounds(size):
    rng = np.random.default_rng(0)
    spec = MaskSpec(0.05, 0.40)
    kinds = set()
    for _ in range(200):
        mask, kind = random_mask(rng, size, size, spec)
        kinds.add(kind)
        assert mask.dtype == bool and mask.shape == (size, size)
        assert 0.05 <= mask.mean() <= 0.40
    assert kinds == {"rect", "blob"}


def test_splice_takes_fake_pixels_inside_and_real_pixels_outside():
    rng = np.random.default_rng(1)
    for shape in [(28, 28), (28, 28, 3)]:
        real = rng.integers(0, 256, shape, dtype=np.uint8)
        fake = rng.integers(0, 256, shape, dtype=np.uint8)
        mask, _ = random_mask(rng, 28, 28, MaskSpec())
        out = splice(real, fake, mask)
        assert np.array_equal(out[mask], fake[mask]) and np.array_equal(out[~mask], real[~mask])


def test_benchmark_is_deterministic_in_its_seed():
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    fakes = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    a = make_spliced(real, fakes, MaskSpec(), seed=3)
    b = make_spliced(real, fakes, MaskSpec(), seed=3)
    c = make_spliced(real, fakes, MaskSpec(), seed=4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2:] == b[2:]
    assert not np.array_equal(a[1], c[1])


def test_impossible_area_bounds_are_a_clear_error():
    with pytest.raises(ValueError, match="area"):
        random_mask(np.random.default_rng(0), 4, 4, MaskSpec(0.05, 0.055), tries=5)
