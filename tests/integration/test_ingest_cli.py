"""`gandefect ingest` and `gandefect data status` end to end: real git, DVC, GX and MLflow."""

import re
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import make_image_folder, run_cli

pytestmark = pytest.mark.slow  # real git, DVC, Great Expectations and MLflow behind the CLI: seconds per call

VERSION = re.compile(r"data version: (\S+\.dir)")


def _runs(project):
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gandefect-data")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def test_ingest_versions_validates_and_tracks_the_default_data(project):
    first = run_cli(project, "ingest", check=True)
    version = VERSION.search(first.stdout).group(1)
    assert "validation: passed" in first.stdout

    # DVC recorded the snapshot, and the configured local remote holds it.
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["ingest"]["outs"][0]["md5"] == version
    status = run_cli(project, "data", "status", check=True).stdout
    assert version in status and "has it" in status and re.search(r"train\s+│\s+3\d\d", status)

    # Same data again: same version, nothing new written.
    second = run_cli(project, "ingest", check=True)
    assert VERSION.search(second.stdout).group(1) == version
    assert "0 new" in second.stdout and "unchanged" in second.stdout

    # `dvc repro` sees nothing changed and skips the stage.
    repro = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "ingest"], cwd=project, capture_output=True, text=True, check=False
    )
    assert repro.returncode == 0 and "didn't change, skipping" in repro.stdout

    runs = _runs(project)
    assert len(runs) == 2
    run = runs[0]
    assert run.data.tags["data_version"] == version
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", run.data.tags["git_commit"])
    assert run.data.params["data.image_size"] == "28" and run.data.tags["validation"] == "passed"
    assert run.data.metrics["n_images"] == 400
    artifacts = {
        a.path for a in MlflowClient(f"sqlite:///{project / 'mlflow.db'}").list_artifacts(run.info.run_id, "data")
    }
    assert "data/data-validation.md" in artifacts


def test_ingest_from_folder_reports_quarantined_files(project, tmp_path):
    folder = make_image_folder(tmp_path / "upload", n_good=40, n_corrupt=3)  # enough for the tiny flow
    proc = run_cli(project, "ingest", "--from", str(folder), check=True)
    assert "40 new" in proc.stdout and "3 quarantined" in proc.stdout
    quarantine = (project / "reports" / "ingest-quarantine.csv").read_text().splitlines()
    assert len(quarantine) == 1 + 3 and all("broken" in line for line in quarantine[1:])


def test_bad_input_gives_a_clear_error_and_a_nonzero_exit(project, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = {str(tmp_path / "nope"): "does not exist", str(tmp_path / "empty"): "empty"}
    for folder, message in cases.items():
        proc = run_cli(project, "ingest", "--from", folder)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (project / "data" / "real").exists()
    proc = run_cli(project, "--profile", "nonexistent", "ingest")
    assert proc.returncode == 2 and "unknown profile" in proc.stderr


def test_a_failing_snapshot_stops_with_a_report_and_is_not_versioned(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["profiles"]["tiny"]["validation"]["class_balance_tolerance"] = 0.0  # no sample of digits is that balanced
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_cli(project, "ingest")
    assert proc.returncode == 3
    assert "expect_column_mean_to_be_between(is_label_" in proc.stderr and "Traceback" not in proc.stderr
    assert "FAIL" in (project / "reports" / "data-validation.md").read_text()
    assert not (project / "dvc.lock").exists()
    run = _runs(project)[0]
    assert run.data.tags["validation"] == "failed" and run.data.tags["data_version"] == "unversioned"
