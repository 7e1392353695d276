"""Faults in the real `gandefect run`: SIGKILL inside four stages, and two runs at once.

Each run is the CLI in a process group of its own. GANDEFECT_PAUSE_AT holds it at a named point
(gandefect.faults); the test then kills the whole group with SIGKILL (the flow and what it started,
as `kill -9` of a process group would), or starts another run meanwhile. The first run starts its
own ephemeral Prefect server and is killed with it; the later ones report to the session's Prefect
server, as runs under a long-lived server do. The run killed in the zoo has a process pool of one
worker (its GAN worker process dies with it; one worker, so which GANs finished before the kill
is fixed); the later ones, whose zoo is cached, run their tasks in threads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from gandefect.faults import PAUSE_AT, PAUSE_FILE
from tests.conftest import make_project, run_cli, start_cli

MODELS = ("gandefect-detector", "gandefect-judge", "gandefect-repairer")

pytestmark = pytest.mark.slow


def _start(project: Path, log: Path, *args: str, pause: str | None = None, api: str | None = None):
    """`gandefect run ARGS` in the background; `api`: report to that Prefect server (else it starts its own)."""
    env = {**os.environ, "BENTOML_HOME": str(project.parent / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("PREFECT_API_URL", None)
    if api:
        env["PREFECT_API_URL"] = api
    if pause:
        env.update({PAUSE_AT: pause, PAUSE_FILE: str(project.parent / "paused")})
    return start_cli(project, "run", *args, env=env, log=log)


def _wait_paused(proc, project: Path, log: Path, timeout: float = 600) -> str:
    marker = project.parent / "paused"
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, (
            f"the run ended ({proc.returncode}) before the pause point:\n{log.read_text()[-3000:]}"
        )
        assert time.monotonic() < deadline, "the pause point was never reached"
        time.sleep(0.5)
    return marker.read_text()


def _kill_at(project: Path, point: str, *args: str, api: str | None = None) -> str:
    """Run until `point`, SIGKILL the run's process group there; the run's output."""
    log = project.parent / f"killed-{point.replace(':', '-')}.log"
    proc = _start(project, log, *args, pause=point, api=api)
    try:
        assert _wait_paused(proc, project, log).startswith(point)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the flow, its workers, its own Prefect server if it started one
        proc.wait(60)
        (project.parent / "paused").unlink(missing_ok=True)
    assert proc.returncode == -signal.SIGKILL
    return log.read_text()


def _client(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _versions(client: MlflowClient) -> dict[str, int]:
    return {m.name: len(client.search_model_versions(f"name = '{m.name}'")) for m in client.search_registered_models()}


def _assert_consistent(project: Path) -> None:
    """Every alias names a version whose model loads; the snapshot on disk is its manifest, whole;
    DVC sees nothing uncommitted."""
    from gandefect.lifecycle.registry import load_torch_model

    client = _client(project)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    for model in client.search_registered_models():
        for alias, version in (model.aliases or {}).items():
            uri = f"models:/{model.name}/{version}"
            flavors = mlflow.models.Model.load(uri).flavors
            loaded = load_torch_model(uri) if "pytorch" in flavors else mlflow.pyfunc.load_model(uri)
            assert loaded is not None, f"{model.name}@{alias} (v{version}) does not load"
    images = project / "data" / "real" / "images"
    manifest = pd.read_csv(project / "data" / "real" / "manifest.csv")
    assert {f"images/{p.name}" for p in images.iterdir()} == set(manifest["path"])  # no orphan, no .tmp
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status"], cwd=project, capture_output=True, text=True, check=False
    )
    assert status.returncode == 0 and "changed" not in status.stdout and "modified" not in status.stdout, status.stdout


@pytest.fixture(scope="module")
def killed_project(tmp_path_factory, prefect_server):
    """A tiny project whose first four runs were SIGKILLed inside ingest, the GAN zoo, the
    detectors stage and the repairer stage (each registered, alias not moved), then a run to the
    end, held at its start while a second run and a rollback were started (and refused)."""
    base = tmp_path_factory.mktemp("faults")
    # three DCGANs (more add seconds, not another kind of stage)
    root = make_project(
        base / "project",
        detect={"leave_one_out": False},
        gan={"losses": ["minimax", "nonsaturating", "lsgan"], "families": []},
    )
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()  # the session's Prefect test server
    figures = {}
    _kill_at(root, "ingest:images-written")  # with the ephemeral Prefect server it started
    figures["after_ingest_kill"] = sorted(p.name for p in (root / "data" / "real" / "images").iterdir())
    figures["manifest_after_ingest_kill"] = (root / "data" / "real" / "manifest.csv").exists()
    _kill_at(root, "gan:lsgan", "--task-runner", "processes=1", api=api)  # the third GAN: two are trained and cached
    figures["after_gan_kill"] = _versions(_client(root))
    _kill_at(root, "detectors:registered", "--task-runner", "threads", api=api)
    client = _client(root)
    figures["after_detector_kill"] = _versions(client)
    figures["champion_after_detector_kill"] = {m.name: dict(m.aliases or {}) for m in client.search_registered_models()}
    # the detector is gated in this run; the repairer is registered, not evaluated yet
    figures["repairer_kill_output"] = _kill_at(root, "repairer:registered", "--task-runner", "threads", api=api)
    figures["after_repairer_kill"] = _versions(client)
    figures["aliases_after_repairer_kill"] = {m.name: dict(m.aliases or {}) for m in client.search_registered_models()}
    # the run to the end holds the project while a second run and a rollback are started
    log = root.parent / "holder.log"
    holder = _start(root, log, "--task-runner", "threads", pause="ingest:images-written", api=api)
    try:
        _wait_paused(holder, root, log)
        figures["holder_pid"] = holder.pid
        figures["refused"] = run_cli(root, "run")
        figures["rollback"] = run_cli(root, "rollback")
    finally:
        (root.parent / "paused").unlink(missing_ok=True)  # the holder goes on
    assert holder.wait(900) == 0, log.read_text()[-4000:]
    figures["output"] = log.read_text()
    return root, figures


def test_a_run_killed_in_ingest_the_gan_zoo_or_between_registering_and_promoting_loses_nothing(killed_project):
    """Four stages: ingest (PNGs written, manifest not), the zoo (two GANs done), the detectors and
    the repairer (each registered, alias not moved). Each next run passed the stage that was killed."""
    root, figures = killed_project
    client = _client(root)
    # killed in ingest with the new PNGs on disk and no manifest yet (the next run finished it; below)
    assert figures["after_ingest_kill"] and not figures["manifest_after_ingest_kill"]
    # killed in the zoo: the two GANs trained before it were kept, nothing else was registered
    gans = {k: v for k, v in figures["after_gan_kill"].items() if k.startswith("gandefect-generator-")}
    assert gans == {"gandefect-generator-minimax": 1, "gandefect-generator-nonsaturating": 1}
    # killed between registering the candidate and moving its alias: registered, no alias
    registered = figures["after_detector_kill"]
    assert registered["gandefect-detector"] == 1
    assert not figures["champion_after_detector_kill"]["gandefect-detector"]
    # the run after: the zoo's finished GANs and the registered candidate were reused, not trained again
    after = _versions(client)
    assert all(n == 1 for name, n in after.items() if name.startswith("gandefect-generator-")), after
    assert after["gandefect-detector"] == 1 and after["gandefect-judge"] == registered["gandefect-judge"]
    assert str(client.get_model_version_by_alias("gandefect-detector", "champion").version) == "1"
    assert "candidate v1 was registered by an interrupted run" in figures["repairer_kill_output"]
    assert "resumed: repairer v1" in figures["output"]
    # killed between registering the repairer and evaluating it: registered, no alias; then reused
    assert figures["after_repairer_kill"]["gandefect-repairer"] == 1 and after["gandefect-repairer"] == 1
    assert not figures["aliases_after_repairer_kill"]["gandefect-repairer"]
    assert str(figures["aliases_after_repairer_kill"]["gandefect-detector"].get("champion")) == "1"
    assert client.get_model_version_by_alias("gandefect-repairer", "champion")
    retrain = client.search_runs(
        [client.get_experiment_by_name("gandefect-retrain").experiment_id], filter_string="tags.state = 'completed'"
    )
    assert len(retrain) == 1 and {"gan-minimax", "gan-nonsaturating"} <= set(retrain[0].data.tags["cached"].split(","))
    _assert_consistent(root)


def test_a_second_run_meanwhile_is_refused_naming_the_first_which_completes(killed_project):
    root, figures = killed_project
    refused = figures["refused"]
    message = refused.stdout + refused.stderr
    assert refused.returncode == 6, message
    assert f"`gandefect run` (pid {figures['holder_pid']}" in message and "--wait" in message
    assert "Traceback" not in message
    rollback = figures["rollback"]
    assert rollback.returncode == 6 and "holds .gandefect/lock" in rollback.stdout + rollback.stderr
    assert "retrain completed" in figures["output"]  # the holder went on to the end
    _assert_consistent(root)  # and left the registry, the aliases, the snapshot and DVC consistent
