"""The tiny project trained once for the session, and the served bento the serving tests and the
fuzz suite share (one build, one `bentoml serve`)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gandefect.gan.families import build_of
from gandefect.lifecycle.bento import free_port, wait_ready
from tests.conftest import copy_project, make_project, run_cli

LIMITS = {"max_upload_mb": 0.5, "max_pixels": 4_000_000, "max_images": 8}
LOSSES = ["minimax", "nonsaturating", "lsgan", "wgan", "wgan-gp", "hinge"]
FAMILIES = ["vae", "mlpgan", "resizegan", "ddpm", "rectflow"]  # generators built another way than the DCGANs
BUILDS = sorted({build_of(member) for member in LOSSES + FAMILIES})  # what leave-one-family-out holds out


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the flows this process runs (the session's training, the
    retrain-flow tests) and the fault test's later runs; other `gandefect run` and `watch`
    commands start their own ephemeral server, as a user's do."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


@dataclass
class Trained:
    root: Path
    zoo: object  # RetrainResult of `retrain` with stages ingest + gans (default runner: a process pool)
    flow: object  # RetrainResult of the whole flow after it (threads): the zoo from the cache, the rest trained


@pytest.fixture(scope="session")
def trained(tmp_path_factory, prefect_server) -> Trained:
    """The tiny project (default tiny params: the whole zoo, leave-one-out on; float32 forced, so
    the session computes the same way on every machine: test_retrain_flow reruns its detectors in
    forced bf16) trained ONCE for the session by the real `retrain` flow: first only ingest + the GAN zoo, with the default runner (GAN
    workers in a process pool), then the whole flow, which takes the zoo from the cache (its tasks
    resolved in threads: no worker to start) and trains the detectors and the repairer in the flow's
    process, gates and promotes them and builds the bento (BENTOML_HOME of the session).

    Read it, never change it: a test that changes a project takes a copy (tests.conftest.copy_project)
    or borrows it (tests.conftest.borrowed). The session checks at its end that nothing changed it."""
    from gandefect.orchestrate import retrain, task_runner_for

    root = make_project(tmp_path_factory.mktemp("trained") / "project", precision="fp32")
    params = str(root / "params.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        zoo = retrain.with_options(task_runner=task_runner_for(None))(params, None, ["ingest", "gans"])
        flow = retrain.with_options(task_runner=task_runner_for("threads"))(params, None)
    assert zoo.state == flow.state == "completed", (zoo.state, flow.state)
    before = fingerprint(root)
    yield Trained(root, zoo, flow)
    after = fingerprint(root)
    changed = sorted(
        k for k in before["files"].keys() | after["files"].keys() if before["files"].get(k) != after["files"].get(k)
    )
    changed += [f"mlflow.db: {t}" for t in before["store"] if before["store"][t] != after["store"][t]]
    assert not changed, f"a test changed the session's trained project (copy or borrow it): {changed[:20]}"


VOLATILE = {".git", ".gandefect", "dask-scratch-space", "__pycache__"}  # git's index, the lock file, scratch
VOLATILE_DVC = ".dvc/tmp"  # DVC's state and locks
# MLflow writes this beside a registered model's files (its name and version) the first time it is
# loaded by `models:/NAME/VERSION` from a local store: reading a model, not changing it
MLFLOW_LOAD_MARK = "registered_model_meta"


def fingerprint(root: Path) -> dict:
    """What a test must not change in the trained project: every file (its content hash) but the
    volatile ones, and the MLflow store's runs, model versions and aliases."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (
            not path.is_file()
            or VOLATILE & set(rel.parts)
            or rel.as_posix().startswith(VOLATILE_DVC)
            or rel.name.startswith("mlflow.db")
            or rel.name == MLFLOW_LOAD_MARK
        ):
            continue
        files[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    with sqlite3.connect(root / "mlflow.db") as db:
        store = {
            table: db.execute(query).fetchall()
            for table, query in [
                ("runs", "SELECT run_uuid, status, end_time FROM runs ORDER BY run_uuid"),
                ("versions", "SELECT name, version, current_stage FROM model_versions ORDER BY name, version"),
                ("aliases", "SELECT name, alias, version FROM registered_model_aliases ORDER BY name, alias"),
            ]
        }
    db.close()
    return {"files": files, "store": store}


@pytest.fixture(scope="session")
def served(tmp_path_factory, trained):
    """A copy of the trained project with the service's limits in its params (read when the bento
    is built; no stage's inputs include them), its bento built, exported and imported into an
    empty BentoML store, and `bentoml serve` of it from an empty folder (no params.yaml, no MLflow
    store)."""
    base = tmp_path_factory.mktemp("serving")
    root = copy_project(trained.root, base / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["serve"] = {**params.get("serve", {}), **LIMITS}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(base / "bentoml"))
        built = run_cli(root, "build-bento", check=True)
        tag = built.stdout.split("bento ", 1)[1].split()[0]
        # ship it: export from the building machine's store, import into an empty one, serve that
        bentoml_cli = str(Path(sys.executable).parent / "bentoml")
        archive = base / "gandefect.bento"
        subprocess.run([bentoml_cli, "export", tag, str(archive)], check=True, capture_output=True)
        mp.setenv("BENTOML_HOME", str(base / "bentoml-served"))
        subprocess.run([bentoml_cli, "import", str(archive)], check=True, capture_output=True)
        served_env = dict(os.environ)  # the env ends with this block: a session fixture leaves no trace
    port = free_port()
    elsewhere = base / "elsewhere"  # no params.yaml, no mlflow.db: the bento is all it has
    elsewhere.mkdir()
    log = open(base / "serve.log", "w")  # noqa: SIM115 - the server writes it until the fixture ends
    proc = subprocess.Popen(
        [bentoml_cli, "serve", tag, "--port", str(port)],
        cwd=elsewhere,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=served_env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, 180, log=(base / "serve.log").read_text)
        yield {
            "url": url,
            "root": root,
            "tag": tag,
            "build_output": built.stdout,
            "base": base,
            "archive": archive,
            "env": served_env,
        }
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
