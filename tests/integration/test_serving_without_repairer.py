"""Serve what passed: a detector champion and no repairer champion build a bento that serves
`detect` and `localize`, while `repair` answers 503 with the reason (over HTTP, the real
`bentoml serve`; the page in headless Chromium says repair is unavailable)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from gandefect.lifecycle.bento import free_port, wait_ready
from tests.conftest import chromium_page, copy_project, run_cli

pytestmark = pytest.mark.slow
REPAIRER = "gandefect-repairer"


@pytest.fixture(scope="module")
def detector_only(tmp_path_factory, trained):
    base = tmp_path_factory.mktemp("detector-only")
    root = copy_project(trained.root, base / "project")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    refused = client.get_model_version_by_alias(REPAIRER, "champion")  # as if it had failed its gate
    client.delete_registered_model_alias(REPAIRER, "champion")
    client.set_model_version_tag(REPAIRER, refused.version, "gate_reasons", "psnr_gain = -3.4 < 0.0")
    env = {**os.environ, "BENTOML_HOME": str(base / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", env["BENTOML_HOME"])
        built = run_cli(root, "build-bento", check=True)
    tag = built.stdout.split("bento ", 1)[1].split()[0]
    port = free_port()
    log = open(base / "serve.log", "w")  # noqa: SIM115 - the server writes it until the test ends
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "bentoml"), "serve", tag, "--port", str(port)],
        cwd=base,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, 180, log=(base / "serve.log").read_text)
        yield {"url": url, "root": root, "built": built.stdout, "version": refused.version}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _fake(root: Path) -> bytes:
    return min((root / "data" / "fakes").glob("*/images/*.png")).read_bytes()


def test_the_bento_builds_without_a_repairer_and_says_why(detector_only):
    assert (
        f"not served: repairer: {REPAIRER} has no `champion`: its newest version v{detector_only['version']} "
        "failed its gate (psnr_gain = -3.4 < 0.0)" in " ".join(detector_only["built"].split())
    )


def test_detect_and_localize_answer_while_repair_gives_503_with_the_reason(detector_only):
    url, fake = detector_only["url"], _fake(detector_only["root"])
    detected = httpx.post(f"{url}/detect", files=[("images", ("g.png", fake, "image/png"))], timeout=30)
    assert detected.status_code == 200 and 0 <= detected.json()[0]["p_fake"] <= 1
    assert httpx.post(f"{url}/localize", files={"image": fake}, timeout=30).status_code == 200
    refused = httpx.post(f"{url}/repair", files={"image": fake}, timeout=30)
    assert refused.status_code == 503
    assert refused.json()["error"].startswith("repair is unavailable: gandefect-repairer has no `champion`")
    assert "psnr_gain = -3.4 < 0.0" in refused.json()["error"]
    meta = httpx.post(f"{url}/metadata", json={}, timeout=30).json()
    assert meta["repairer"]["available"] is False and "failed its gate" in meta["repairer"]["reason"]
    assert meta["detector"]["version"]


@pytest.mark.browser
def test_the_page_says_repair_is_unavailable(detector_only, tmp_path):
    upload = tmp_path / "g.png"
    upload.write_bytes(_fake(detector_only["root"]))
    with chromium_page() as page:
        page.goto(detector_only["url"] + "/")
        page.wait_for_function("document.getElementById('models').textContent.includes('repair unavailable')")
        page.set_input_files("#file", str(upload))
        page.wait_for_selector("#overlay[data-ready='1']", timeout=30_000)
        assert page.text_content("#score").endswith("%") and not page.is_visible("#error")
        assert "unavailable: gandefect-repairer has no `champion`" in page.text_content("#repair-note")
