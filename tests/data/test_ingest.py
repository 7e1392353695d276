"""Ingest into a snapshot: counts, quarantine, idempotence, stable splits, clear errors."""

from pathlib import Path

import pytest

from gandefect.config import load_config
from gandefect.data import snapshot, sources
from gandefect.errors import BadInputError
from tests.conftest import make_image_folder, write_params


@pytest.fixture
def cfg(tmp_path: Path):
    return load_config(write_params(tmp_path))


def _ingest(cfg, *specs, **kw):
    return snapshot.ingest(cfg, [sources.resolve_source(s, cfg.data.max_images) for s in specs], **kw)


def _snapshot_files(cfg) -> dict[str, bytes]:
    return {str(p.relative_to(cfg.real_dir)): p.read_bytes() for p in sorted(cfg.real_dir.rglob("*")) if p.is_file()}


def test_default_source_is_the_embedded_mnist_digits(tmp_path):
    cfg = load_config(write_params(tmp_path, profile="default"))
    result = _ingest(cfg, "mnist5k")
    manifest = snapshot.read_manifest(cfg.real_dir)
    assert result.total == 5000 and len(manifest) == 5000
    assert sorted(manifest["label"].unique()) == [str(d) for d in range(10)]
    assert set(manifest.columns) >= {"path", "sha256", "source", "label", "split"}
    assert all((cfg.real_dir / p).is_file() for p in manifest["path"].head(50))


def test_folder_with_corrupt_files_ingests_good_ones_and_quarantines_the_rest(cfg, tmp_path):
    folder = make_image_folder(tmp_path / "mixed", n_good=20, n_corrupt=3)
    result = _ingest(cfg, str(folder))
    assert result.added == 20 and result.total == 20
    assert len(result.quarantined) == 3
    assert {Path(q.ref).stem for q in result.quarantined} == {"broken0", "broken1", "broken2"}


def test_reingest_of_the_same_data_is_idempotent(cfg, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", n_good=30)
    _ingest(cfg, "mnist5k", str(folder))
    before = _snapshot_files(cfg)
    again = _ingest(cfg, "mnist5k", str(folder))
    assert again.added == 0 and sorted(again.skipped_sources) == sorted(["mnist5k", "folder:imgs"])
    assert _snapshot_files(cfg) == before


def test_adding_images_never_moves_old_images_between_splits(cfg, tmp_path):
    _ingest(cfg, "mnist5k")
    old = snapshot.read_manifest(cfg.real_dir).set_index("sha256")["split"]
    result = _ingest(cfg, str(make_image_folder(tmp_path / "new", n_good=10, seed=7)))
    new = snapshot.read_manifest(cfg.real_dir).set_index("sha256")["split"]
    assert result.added == 10 and len(new) == len(old) + 10
    assert (new.loc[old.index] == old).all()


def test_exact_duplicates_collapse_into_one_image(cfg, tmp_path):
    folder = make_image_folder(tmp_path / "dups", n_good=5)
    for p in list(folder.glob("*.png")):
        (folder / f"copy_{p.name}").write_bytes(p.read_bytes())
    result = _ingest(cfg, str(folder))
    assert result.duplicates >= 1 and result.total == 5


@pytest.mark.parametrize("case", ["missing", "empty", "no-images", "a-file"])
def test_unusable_folders_are_clear_errors_and_write_nothing(cfg, tmp_path, case):
    target = tmp_path / case
    if case == "empty":
        target.mkdir()
    elif case == "no-images":
        make_image_folder(target, n_good=0, n_corrupt=3)
    elif case == "a-file":
        target.write_text("x")
    with pytest.raises(BadInputError) as err:
        _ingest(cfg, str(target))
    assert (
        case.split("-")[0] in str(err.value) or "not a folder" in str(err.value) or "does not exist" in str(err.value)
    )
    assert not cfg.real_dir.exists()


def test_a_bad_folder_does_not_touch_an_existing_snapshot(cfg, tmp_path):
    _ingest(cfg, "mnist5k")
    before = _snapshot_files(cfg)
    with pytest.raises(BadInputError):
        _ingest(cfg, str(make_image_folder(tmp_path / "bad", n_good=0, n_corrupt=2)))
    assert _snapshot_files(cfg) == before


def test_changing_the_image_size_rebuilds_from_recorded_sources(tmp_path):
    cfg = load_config(write_params(tmp_path))
    _ingest(cfg, "mnist5k", str(make_image_folder(tmp_path / "imgs", n_good=8)))
    bigger = load_config(write_params(tmp_path, data={"image_size": 32}))
    result = _ingest(bigger, "mnist5k")
    assert result.rebuilt and result.total == 400 + 8
    table = snapshot.image_table(bigger.real_dir)
    assert set(table["width"]) == {32} and len(list((bigger.real_dir / "images").glob("*.png"))) == 408
