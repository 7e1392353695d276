"""The encoding path and content-hash splits."""

import hashlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gandefect.data.images import encode_png, open_image, pixel_sha256, split_for, splits_by_rank, to_model_image

SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_any_mode_and_size_becomes_configured_size_and_mode():
    rng = np.random.default_rng(0)
    for mode, shape in [("RGBA", (50, 30, 4)), ("RGB", (17, 64, 3)), ("LA", (40, 40, 2)), ("L", (9, 12))]:
        im = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        for target in ("L", "RGB"):
            for resize in ("crop", "pad"):
                out = to_model_image(im, 28, target, resize)
                assert out.size == (28, 28) and out.mode == target


def test_sixteen_bit_images_are_scaled_not_clipped():
    arr = np.full((28, 28), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    out = to_model_image(Image.fromarray(arr), 28, "L")
    assert np.asarray(out).max() == 255 and np.asarray(out).min() == 0


def test_png_encoding_is_deterministic_and_lossless():
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L")
    blob = encode_png(im)
    assert blob == encode_png(im)
    assert pixel_sha256(open_image(blob)) == pixel_sha256(im)


def test_split_is_a_function_of_content_and_follows_fractions():
    rng = np.random.default_rng(2)
    hashes = [pixel_sha256(Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")) for _ in range(4000)]
    splits = [split_for(h, SPLITS) for h in hashes]
    assert splits == [split_for(h, SPLITS) for h in hashes]
    fractions = {s: splits.count(s) / len(splits) for s in SPLITS}
    for name, expected in SPLITS.items():
        assert abs(fractions[name] - expected) < 0.03


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
    fractions=st.sampled_from(
        [
            SPLITS,
            {"train": 0.7, "val": 0.15, "test": 0.15},
            {"train": 1.0, "val": 0.0, "test": 0.0},
            {"train": 0.5, "val": 0.0, "test": 0.5},
        ]
    ),
)
def test_a_generated_set_fills_every_split_in_proportion_whatever_its_size(n, seed, fractions):
    hashes = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(n)]
    splits = splits_by_rank(hashes, fractions)
    wanted = [s for s, f in fractions.items() if f > 0]
    assert len(splits) == n and set(splits) <= set(wanted)
    if n >= len(wanted):
        assert set(splits) == set(wanted)  # no split of a small set is left empty by chance
    for name in wanted:
        assert abs(splits.count(name) - n * fractions[name]) <= 1 + (n < 2 * len(wanted))
    # a function of the set, not of the order it was sampled in
    again = dict(zip(hashes[::-1], splits_by_rank(hashes[::-1], fractions)))
    assert [again[h] for h in hashes] == splits
