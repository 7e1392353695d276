"""What `gandefect run` ingests: exactly the sources configured or named, never the default on
top of a user's snapshot, and a clear stop where the snapshot and the config disagree."""

import pytest

from gandefect.config import load_config
from gandefect.data import snapshot, sources
from gandefect.errors import BadInputError
from gandefect.stages.ingest import sources_to_ingest
from tests.conftest import make_image_folder, run_cli, write_params


def _names(found):
    return [s.name for s in found]


def _user_snapshot(tmp_path, **data):
    folder = make_image_folder(tmp_path / "shots", n_good=12)
    cfg = load_config(write_params(tmp_path, data=data))
    snapshot.ingest(cfg, [sources.resolve_source(str(folder))])
    return cfg, folder


def test_an_empty_snapshot_is_filled_from_the_default_source(tmp_path):
    assert _names(sources_to_ingest(load_config(write_params(tmp_path)), exact=True)) == ["mnist5k"]
    photos = load_config(write_params(tmp_path, data={"default_source": "photos"}))
    assert _names(sources_to_ingest(photos, exact=True)) == ["photos"]


def test_a_users_snapshot_is_refreshed_from_its_own_sources_and_nothing_is_added(tmp_path):
    cfg, _ = _user_snapshot(tmp_path)
    assert _names(sources_to_ingest(cfg, exact=True)) == ["folder:shots"]  # not mnist5k on top


def test_a_configured_source_the_snapshot_does_not_hold_stops_with_the_reason(tmp_path):
    cfg, _ = _user_snapshot(tmp_path, source="mnist5k")
    with pytest.raises(BadInputError, match=r"holds images from folder:shots, which data.source \(mnist5k\)"):
        sources_to_ingest(cfg, exact=True)
    assert _names(sources_to_ingest(cfg, replace=True, exact=True)) == ["mnist5k"]  # starting over is allowed
    assert _names(sources_to_ingest(cfg)) == ["mnist5k"]  # `gandefect ingest` adds, as it says


def test_run_from_a_folder_the_snapshot_does_not_hold_stops_before_the_flow(project, tmp_path):
    mine = make_image_folder(tmp_path / "mine", n_good=30)
    other = make_image_folder(tmp_path / "other", n_good=10, seed=1)
    assert run_cli(project, "ingest", "--from", str(mine)).returncode == 0
    manifest = snapshot.read_manifest(project / "data" / "real")
    stopped = run_cli(project, "run", "--from", str(other))
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr
    assert "holds images from folder:mine, which the sources you named (--from) does not include" in " ".join(
        (stopped.stdout + stopped.stderr).split()
    )
    assert snapshot.read_manifest(project / "data" / "real").equals(manifest)  # nothing touched


def test_ingest_replace_keeps_only_the_named_folder_and_says_so(project, tmp_path):
    first = make_image_folder(tmp_path / "first", n_good=30)
    second = make_image_folder(tmp_path / "second", n_good=25, seed=3)
    assert run_cli(project, "ingest", "--from", str(first)).returncode == 0
    replaced = run_cli(project, "ingest", "--replace", "--from", str(second))
    text = " ".join(replaced.stdout.split())
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert "replaced: the snapshot now holds only the sources named" in text and "settings changed" not in text
    manifest = snapshot.read_manifest(project / "data" / "real")
    assert set(manifest["source"]) == {"folder:second"} and len(manifest) == 25
