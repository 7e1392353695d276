"""A copy of the session's trained project (tests.conftest.copy_project) is self-contained: what a
test does in it never reaches the original, whose absolute paths MLflow and DVC had recorded."""

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import copy_project

pytestmark = pytest.mark.slow


def test_a_copy_names_only_itself_and_its_models_load_from_it(trained, tmp_path):
    copy = copy_project(trained.root, tmp_path / "project")
    original = str(trained.root)
    # no text the tools read names the original (the flow's cache records and reports may: they are
    # keyed by the original store's path, so the copy never reuses them, and only people read reports)
    readers = [
        p
        for p in copy.rglob("*")
        if p.is_file()
        and p.stat().st_size < 2**20
        and not {".git", ".gandefect", "reports", "__pycache__"} & set(p.relative_to(copy).parts)
    ]
    naming = [str(p.relative_to(copy)) for p in readers if original.encode() in p.read_bytes()]
    assert naming == [], naming

    client = MlflowClient(tracking_uri=f"sqlite:///{copy / 'mlflow.db'}")
    version = client.get_model_version_by_alias("gandefect-detector", "champion")
    where = client.download_artifacts(version.run_id, "", str(tmp_path / "download"))
    assert any((tmp_path / "download").rglob("*")), where
    for experiment in client.search_experiments():  # gandefect's under mlartifacts/, MLflow's Default under mlruns/
        assert experiment.artifact_location.startswith((str(copy), copy.as_uri())), experiment.artifact_location
    assert str(copy) in version.source or version.source.startswith(("models:/", "runs:/")), version.source

    remote = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "--local", "remote.gandefect.url"],
        cwd=copy,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert remote == str(copy / ".dvc-remote")
