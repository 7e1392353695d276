"""Wild encodings are made once: an image's bytes do not depend on the set it is in, the cache
encodes only images it has not seen, and a change in anything an encoding depends on makes a
fresh one."""

from __future__ import annotations

import numpy as np
import pytest

from gandefect.data import conditions
from gandefect.detect.common import Labeled
from gandefect.evaluate import wild
from gandefect.stages.detectors import envelope_for

NAMES = ["png", "jpeg75", "resize", "noise"]


def labeled(seed: int, n: int = 10) -> Labeled:
    rng = np.random.default_rng(seed)
    return Labeled(
        rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(int),
        np.array(["real"] * (n // 2) + ["gan"] * (n - n // 2)),
    )


def joined(a: Labeled, b: Labeled) -> Labeled:
    return Labeled(np.concatenate([a.images, b.images]), np.r_[a.labels, b.labels], np.r_[a.generators, b.generators])


@pytest.fixture
def encoded(monkeypatch) -> list[int]:
    """The number of images each encoding call made."""
    counts: list[int] = []
    real_condition = wild._condition

    def counted(images, *args):
        counts.append(len(images))
        return real_condition(images, *args)

    monkeypatch.setattr(wild, "_condition", counted)
    return counts


def test_an_image_s_random_condition_is_the_same_in_any_set():
    a, b = labeled(0).images, labeled(1).images
    alone = conditions.client_bytes(a[:1], "noise", wild.WILD_SEED)
    among = conditions.client_bytes(np.concatenate([b, a[:1]]), "noise", wild.WILD_SEED)
    assert alone[0] == among[-1]


def test_a_grown_set_encodes_only_its_new_images_and_equals_a_fresh_build(tmp_path, encoded):
    cache = wild.EncodingCache(tmp_path)
    envelope = envelope_for(["jpeg75"])
    first, new = labeled(0), labeled(1)
    wild.build(first, NAMES, "crop", envelope, cache=cache)
    assert encoded == [10] * len(NAMES)
    grown = joined(new, first)  # new images first: rows move, the cache finds them by content
    encoded.clear()
    assert cache.to_encode(grown, NAMES, "crop", envelope) == 10 * len(NAMES)
    cached = wild.build(grown, NAMES, "crop", envelope, cache=cache)
    assert encoded == [10] * len(NAMES)  # only the new ones
    encoded.clear()
    again = wild.build(grown, NAMES, "crop", envelope, cache=cache)
    assert encoded == []  # a rerun encodes nothing
    fresh = wild.build(grown, NAMES, "crop", envelope)
    for name in NAMES:
        for built in (cached, again):
            assert np.array_equal(built.inputs[name], fresh.inputs[name]), name
            assert np.array_equal(built.inside[name], fresh.inside[name]), name


@pytest.mark.parametrize(
    "change",
    ["resize", "envelope", "layout"],
)
def test_a_change_in_anything_an_encoding_depends_on_encodes_again(tmp_path, encoded, monkeypatch, change):
    cache, data = wild.EncodingCache(tmp_path), labeled(0)
    envelope = envelope_for(["jpeg75"])
    wild.build(data, NAMES, "crop", envelope, cache=cache)
    encoded.clear()
    resize = "pad" if change == "resize" else "crop"
    if change == "envelope":
        envelope = envelope_for(["jpeg75", "resize"])
    if change == "layout":
        monkeypatch.setattr(wild, "ENCODING_LAYOUT", wild.ENCODING_LAYOUT + 1)
    rebuilt = wild.build(data, NAMES, resize, envelope, cache=cache)
    assert encoded == [10] * len(NAMES)
    fresh = wild.build(data, NAMES, resize, envelope)
    assert all(np.array_equal(rebuilt.inputs[n], fresh.inputs[n]) for n in NAMES)
    # the inputs themselves: new images are encoded, known ones are not
    encoded.clear()
    wild.build(joined(data, labeled(2, 4)), NAMES, resize, envelope, cache=cache)
    assert encoded == [4] * len(NAMES)


def test_an_unreadable_cache_file_is_encoded_afresh(tmp_path, encoded):
    cache, data = wild.EncodingCache(tmp_path), labeled(0)
    wild.build(data, NAMES, "crop", cache=cache)
    for path in tmp_path.glob("*.npz"):
        path.write_bytes(b"not a zip")  # a disk error, a copy cut short
    encoded.clear()
    rebuilt = wild.build(data, NAMES, "crop", cache=cache)
    assert encoded == [10] * len(NAMES)
    assert np.array_equal(rebuilt.inputs["noise"], wild.build(data, NAMES, "crop").inputs["noise"])
