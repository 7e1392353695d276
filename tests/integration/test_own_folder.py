"""A user's own folder, end to end: unlabeled colour photos of mixed size and format, at 64x64 RGB in
the tiny profile, through `gandefect run` to a served bento that answers `detect`; and a folder too
small for the flow, which stops before anything is written or trained, with exit 2 and the minimum."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from mlflow.tracking import MlflowClient

from gandefect.lifecycle.bento import free_port, wait_ready
from tests.conftest import make_project, run_cli, start_cli
from tests.photo_folder import make_photo_folder


@pytest.mark.slow
def test_an_unlabeled_rgb_folder_runs_the_whole_flow_to_a_served_bento(tmp_path):
    # a smaller zoo than the default (two losses, one other family): a user's choice, and the time of a test
    project = make_project(
        tmp_path / "project",
        data={"image_size": 64, "mode": "RGB"},
        gan={"losses": ["nonsaturating", "hinge"], "families": ["vae"]},
    )
    folder = make_photo_folder(tmp_path / "shots", 160)
    run = run_cli(project, "run", "--from", str(folder), "--task-runner", "threads")  # no worker to start
    assert run.returncode == 0, run.stdout + run.stderr
    assert "retrain completed" in run.stdout and "Traceback" not in run.stdout + run.stderr

    # no labels: the zoo is measured in the label-free feature space, and the report says why
    report = (project / "reports" / "gan-zoo.md").read_text()
    assert "label-free feature space" in report and "Class entropy and the confident rate are absent" in report
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    gans = client.search_runs(
        [client.get_experiment_by_name("gandefect-gans").experiment_id], "tags.mlflow.runName = 'gan-hinge'"
    )
    assert gans and gans[0].data.params["feature_space"] == "contrastive"
    assert "fid" in gans[0].data.metrics and "class_entropy" not in gans[0].data.metrics
    # every figure the small folder cannot support is named, with its reason, never a crash
    detector = client.get_model_version_by_alias("gandefect-detector", "champion")
    tags = client.get_run(detector.run_id).data.tags
    assert all(v for k, v in tags.items() if k.startswith("missing."))

    port = free_port()
    log = tmp_path / "serve.log"
    serve = start_cli(project, "serve", "--port", str(port), env=dict(os.environ), log=log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, serve, 180, log=log.read_text)
        assert httpx.post(f"{url}/metadata", json={}, timeout=30).json()["input"] == {
            "size": 64,
            "mode": "RGB",
            "resize": "crop",
        }
        photos = sorted(p for p in folder.rglob("*") if p.is_file())[:3]  # JPEG, PNG, WebP at their own sizes
        r = httpx.post(f"{url}/detect", files=[("images", (p.name, p.read_bytes())) for p in photos], timeout=60)
        assert r.status_code == 200, r.text
        assert {a["verdict"] for a in r.json()} <= {"fake", "real", "uncertain"} and len(r.json()) == 3
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(30)


def test_a_folder_too_small_for_the_flow_stops_before_anything_is_written(project, tmp_path):
    folder = make_photo_folder(tmp_path / "thirty", 30)
    proc = run_cli(project, "--profile", "default", "ingest", "--from", str(folder))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = " ".join(proc.stderr.split())
    assert "too few distinct images for the flow" in message and "(needs 100)" in message, message
    assert "It needs at least 100 distinct images (validation.min_images), 32 in train (gan.batch_size)" in message
    assert "Traceback" not in proc.stderr and not (project / "data" / "real").exists()
