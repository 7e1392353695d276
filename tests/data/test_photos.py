"""The built-in photo source: seeded colour crops of the photographs inside the scikit-image
and scikit-learn wheels, with no labels; ingested like any source."""

import numpy as np

from gandefect.config import load_config
from gandefect.data import snapshot, sources
from gandefect.data.datasets import load_split
from tests.conftest import write_params


def test_the_photo_source_yields_seeded_unlabeled_colour_crops():
    source = sources.resolve_source("photos", 40)
    first, again = list(sources.iter_images(source)), list(sources.iter_images(source))
    assert len(first) == sources.count(source) == 40
    assert [r.ref for r in first] == [r.ref for r in again]  # the same crops on every machine
    assert all(r.label is None and r.error is None and r.image.mode == "RGB" for r in first)
    assert all(r.image.size[0] == r.image.size[1] >= 60 for r in first)  # square, never smaller than the source allows
    assert len({r.ref.split(":")[0] for r in first}) >= 5  # many photographs, not one
    assert len(sources.photo_paths()) == len(sources.PHOTO_FILES)


def test_photos_ingest_as_an_unlabeled_rgb_snapshot(tmp_path):
    cfg = load_config(write_params(tmp_path, data={"image_size": 64, "mode": "RGB", "max_images": 60}))
    result = snapshot.ingest(cfg, [sources.resolve_source("photos", cfg.data.max_images)])
    manifest = snapshot.read_manifest(cfg.real_dir)
    assert result.total == len(manifest) >= 55  # a crop may repeat another's pixels: kept once
    assert manifest["label"].isna().all() and set(manifest["source"]) == {"photos"}
    train = load_split(cfg.real_dir, "train")
    assert train.labels is None and tuple(train.images.shape[1:]) == (3, 64, 64)
    assert float(train.images.std()) > 0.2 and not np.allclose(train.images[:, 0], train.images[:, 1])  # colour
