"""The served bento shared by the serving tests and the fuzz suite: one build, one `bentoml serve`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gandefect.lifecycle.bento import free_port, wait_ready
from tests.conftest import REPO, run_cli, write_params

LIMITS = {"max_upload_mb": 0.5, "max_pixels": 4_000_000, "max_images": 8}


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """A tiny project with champions, its bento exported and imported into an empty BentoML
    store, and `bentoml serve` of it from an empty folder (no params.yaml, no MLflow store)."""
    base = tmp_path_factory.mktemp("serving")
    root = base / "project"
    root.mkdir()
    write_params(root, detect={"leave_one_out": False}, serve=LIMITS)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "src" / "gandefect" / "data", root / "src" / "gandefect" / "data",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(base / "bentoml"))
        mp.setenv("BENTOML_DO_NOT_TRACK", "true")
        for stage in ("ingest", "train-gans", "train-detectors", "train-repairer"):
            run_cli(root, stage, check=True)
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
    log = open(base / "serve.log", "w")
    proc = subprocess.Popen([bentoml_cli, "serve", tag, "--port", str(port)],
                            cwd=elsewhere, stdout=log, stderr=subprocess.STDOUT, env=served_env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, 180, log=(base / "serve.log").read_text)
        yield {"url": url, "root": root, "tag": tag, "build_output": built.stdout, "base": base,
               "archive": archive, "env": served_env}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
