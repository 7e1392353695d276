"""The served champions as a client sees them: `gandefect serve`, then a colour JPEG upload to
`detect`, `localize` and `repair`, and the web page in headless Chromium with that upload. The
page's screenshot goes to reports/serve-check.png and into the newest `retrain` MLflow run
(artifact `page/serve-check.png`).

    .venv/bin/python bench/serve_check.py [--params params.yaml] [--profile rgb64] [--image FILE]

Without --image, the upload is the first sample of the first generator's fake set, saved as a
JPEG (quality 90) at the model's size: a generated image as a client would send it.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import mlflow
from PIL import Image

from gandefect.config import load_config
from gandefect.lifecycle import tracking
from gandefect.lifecycle.bento import free_port, wait_ready
from gandefect.names import RETRAIN_EXPERIMENT


def upload_file(cfg, image: str | None, folder: Path) -> Path:
    if image:
        return Path(image)
    first = min(cfg.path("data/fakes").glob("*/images/*.png"))
    path = folder / f"{first.parent.parent.name}-sample.jpg"
    Image.open(first).convert("RGB").save(path, "JPEG", quality=90)
    return path


def post(url: str, route: str, files, tries: int = 10) -> httpx.Response:
    """POST as a client should: a 503 `busy` (the service sheds load) is retried after a second."""
    for _ in range(tries):
        r = httpx.post(f"{url}{route}", files=files, timeout=60)
        if r.status_code != 503 or "busy" not in r.text:
            return r
        time.sleep(1)
    return r


def screenshot(url: str, upload: Path, out: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("Debian's chromium is needed for the page check: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('models').textContent.includes('detector v')")
            page.set_input_files("#file", str(upload))
            page.wait_for_selector("#overlay[data-ready='1']", timeout=60_000)
            page.screenshot(path=str(out), full_page=True)
            return (
                f"page: {page.text_content('#models')}; score {page.text_content('#score')} "
                f"({page.text_content('#verdict')}); repair: {page.text_content('#repair-note')}"
            )
        finally:
            browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--image", default=None, help="the file to upload (default: a generated sample as JPEG)")
    args = ap.parse_args()
    cfg = load_config(args.params, args.profile)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="serve-check-"))
    log = work / "serve.log"
    command = [
        str(Path(sys.executable).parent / "gandefect"),
        "--params",
        args.params,
        *(["--profile", args.profile] if args.profile else []),
        "serve",
        "--port",
        str(port),
    ]
    with open(log, "w") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(url, proc, 600, log=log.read_text)
        upload = upload_file(cfg, args.image, work)
        data = upload.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            print(f"upload {upload.name}: {im.format} {im.size[0]}x{im.size[1]} {im.mode}")
        r = post(url, "/detect", [("images", (upload.name, data, "image/jpeg"))])
        print(f"detect {r.status_code}: {r.json()}")
        r = post(url, "/localize", {"image": (upload.name, data, "image/jpeg")})
        print(
            f"localize {r.status_code}: {r.headers.get('content-type')}, map "
            f"{Image.open(io.BytesIO(r.content)).size if r.status_code == 200 else r.text}, "
            f"area {r.headers.get('x-defect-area')}, verdict {r.headers.get('x-verdict')}"
        )
        r = post(url, "/repair", {"image": (upload.name, data, "image/jpeg")})
        if r.status_code == 200:
            print(
                f"repair 200: {r.headers.get('content-type')}, score {r.headers.get('x-score-before')} -> "
                f"{r.headers.get('x-score-after')}, rewritten {r.headers.get('x-mask-area')}, "
                f"stopped {r.headers.get('x-stopped')}"
            )
        else:
            print(f"repair {r.status_code}: {r.text}")
        meta = httpx.post(f"{url}/metadata", json={}, timeout=60).json()
        print(
            f"metadata: detector v{meta['detector']['version']} ({meta['detector']['family']}), "
            f"repairer {meta['repairer']}, input {meta['input']}"
        )
        shot = cfg.report_dir / "serve-check.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        print(screenshot(url, upload, shot))
        tracking.setup(cfg)
        runs = mlflow.search_runs(
            experiment_names=[RETRAIN_EXPERIMENT], order_by=["start_time DESC"], max_results=1, output_format="list"
        )
        if runs:
            mlflow.MlflowClient().log_artifact(runs[0].info.run_id, str(shot), "page")
            print(f"screenshot {shot}, logged to retrain run {runs[0].info.run_id} as page/{shot.name}")
        else:
            print(f"screenshot {shot} (no retrain run to log it to)")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    main()
