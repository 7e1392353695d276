"""The BentoML service over HTTP: a tiny project's champions built into a bento and served by a
real `bentoml serve` subprocess; every API on real uploads, every bad-input case, and the web
page in headless Chromium."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from gandefect.config import load_config
from gandefect.lifecycle.bento import free_port, wait_ready
from tests.conftest import chromium_page, run_cli, start_cli
from tests.integration.conftest import LIMITS

pytestmark = pytest.mark.slow


def _champion(root: Path, name: str):
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").get_model_version_by_alias(name, "champion")


def _png(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _generated(root: Path) -> Path:
    return min((root / "data" / "fakes").glob("*/images/*.png"))


def _ready(url: str) -> None:
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200


def test_detect_scores_png_and_jpeg_uploads_with_the_champion_version(served):
    url, root = served["url"], served["root"]
    fake = _generated(root).read_bytes()
    real = next((root / "data" / "real").rglob("*.png"))
    jpeg = _png(Image.open(real).convert("RGB"), "JPEG", quality=90)
    r = httpx.post(
        f"{url}/detect",
        files=[("images", ("g.png", fake, "image/png")), ("images", ("r.jpg", jpeg, "image/jpeg"))],
        timeout=30,
    )
    assert r.status_code == 200, r.text
    results = r.json()
    champion = _champion(root, "gandefect-detector")
    assert len(results) == 2
    for item in results:
        assert 0.0 <= item["p_fake"] <= 1.0
        assert item["is_fake"] == (item["p_fake"] >= item["threshold"])
        assert item["model_version"] == str(champion.version)
    assert results[0]["threshold"] == pytest.approx(float(champion.tags["threshold"]), abs=1e-5)


def test_metrics_count_the_served_scores_and_status_compares_them_with_validation(served):
    from gandefect.evaluate import drift

    url, root = served["url"], served["root"]
    version = str(_champion(root, "gandefect-detector").version)
    match = {"model_version": version}

    def counts():
        page = httpx.get(f"{url}/metrics", timeout=10).text
        return sum(drift.parse_prometheus(page, match=match)), sum(drift.parse_counter(page, match=match).values())

    before = counts()
    fakes = sorted((root / "data" / "fakes").glob("*/images/*.png"))[:6]
    r = httpx.post(
        f"{url}/detect", files=[("images", (p.name, p.read_bytes(), "image/png")) for p in fakes], timeout=30
    )
    assert r.status_code == 200, r.text
    assert counts() == (before[0] + len(fakes), before[1] + len(fakes))
    status = run_cli(root, "status", "--traffic", url, check=True).stdout
    assert f"served scores of v{version}" in status and "validation share" in status
    assert "drift:" in status and f"of {before[0] + len(fakes)} served images" in status
    # a service that cannot be reached is a clear error, not a traceback
    gone = run_cli(root, "status", "--traffic", "http://127.0.0.1:9")
    assert gone.returncode == 2 and "cannot read http://127.0.0.1:9/metrics" in gone.stderr


def test_detect_accepts_every_format_and_mode_at_any_size(served):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)
    files = [
        ("images", ("a.png", _png(Image.fromarray(rgb[..., 0], "L")), "image/png")),
        ("images", ("b.jpg", _png(Image.fromarray(rgb), "JPEG"), "image/jpeg")),
        ("images", ("c.webp", _png(Image.fromarray(rgb).convert("RGBA"), "WEBP"), "image/webp")),
        ("images", ("d.bmp", _png(Image.fromarray(rgb), "BMP"), "image/bmp")),
        ("images", ("e.gif", _png(Image.fromarray(rgb).convert("P"), "GIF"), "image/gif")),
        ("images", ("f.png", _png(Image.fromarray(rgb[:20, :33, 0].astype(np.uint16) * 257)), "image/png")),
    ]
    r = httpx.post(f"{served['url']}/detect", files=files, timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.json()) == len(files)


def test_localize_returns_a_png_map_whose_regions_agree_with_the_verdict(served):
    seen = set()
    fakes = sorted((served["root"] / "data" / "fakes").glob("*/images/*.png"))[:20]
    for image in fakes + [_called_real(served["url"], served["root"])]:
        r = httpx.post(f"{served['url']}/localize", files={"image": image.read_bytes()}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        heat = np.asarray(Image.open(io.BytesIO(r.content)))
        assert heat.shape == (28, 28) and heat.dtype == np.uint8
        top, area = json.loads(r.headers["x-top-boxes"]), float(r.headers["x-top-area"])
        mask = heat >= round(float(r.headers["x-map-threshold"]) * 255)
        assert abs(mask.mean() - area) <= 0.05  # the regions are the map at the map threshold
        assert sum(b["pixels"] for b in top) == pytest.approx(area * 28 * 28, abs=1)
        for b in top:
            assert 0 <= b["x0"] < b["x1"] <= 28 and 0 <= b["y0"] < b["y1"] <= 28
        p, threshold = float(r.headers["x-p-fake"]), float(r.headers["x-threshold"])
        verdict = r.headers["x-verdict"]
        assert verdict == ("fake" if p >= threshold else "real")  # PNG at the model's size: inside the envelope
        defects, defect_area = json.loads(r.headers["x-defect-boxes"]), float(r.headers["x-defect-area"])
        if verdict == "fake":  # the regions are its defects
            assert r.headers["x-regions"] == "defects" and (defects, defect_area) == (top, area)
        else:  # called real: no region is a defect, whatever the map shows
            assert r.headers["x-regions"].startswith("highest-scoring: the image as a whole is called real")
            assert defects == [] and defect_area == 0.0
        seen.add(verdict)
    assert "real" in seen  # the real image, at least


def test_repair_with_a_mask_rewrites_only_the_masked_pixels(served):
    image = _generated(served["root"]).read_bytes()
    mask = np.zeros((28, 28), np.uint8)
    mask[8:18, 6:20] = 255
    r = httpx.post(
        f"{served['url']}/repair", files={"image": image, "mask": _png(Image.fromarray(mask, "L"))}, timeout=30
    )
    assert r.status_code == 200, r.text
    before = np.asarray(Image.open(io.BytesIO(image)))
    after = np.asarray(Image.open(io.BytesIO(r.content)))
    assert after.shape == before.shape
    assert np.array_equal(after[mask == 0], before[mask == 0])
    assert float(r.headers["x-mask-area"]) == pytest.approx((mask > 0).mean(), abs=1e-6)
    assert 0.0 <= float(r.headers["x-score-after"]) <= 1.0 and 0.0 <= float(r.headers["x-score-before"]) <= 1.0
    assert r.headers["x-repairer-version"] == str(_champion(served["root"], "gandefect-repairer").version)


def _real(root: Path) -> Path:
    return min((root / "data" / "real" / "images").glob("*.png"))


def _called_real(url: str, root: Path) -> Path:
    """A real image the served detector calls real (the threshold leaves most real images there)."""
    paths = sorted((root / "data" / "real" / "images").glob("*.png"))[:32]
    for start in range(0, len(paths), LIMITS["max_images"]):
        chunk = paths[start : start + LIMITS["max_images"]]
        for path, answer in zip(chunk, _detect(url, [p.read_bytes() for p in chunk])):
            if answer["verdict"] == "real":
                return path
    raise AssertionError("the served detector calls 32 real images fake")


def _detect(url: str, files: list[bytes]) -> list[dict]:
    r = httpx.post(f"{url}/detect", files=[("images", (f"{i}", b)) for i, b in enumerate(files)], timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _one_called(url: str, paths: list[Path], verdict: str) -> bytes:
    """An upload the champion answers `verdict` for (the tiny champion is weak; some always are)."""
    files = [p.read_bytes() for p in paths[: 8 * 8]]
    answers = [a for i in range(0, len(files), 8) for a in _detect(url, files[i : i + 8])]
    found = [f for f, a in zip(files, answers) if a["verdict"] == verdict]
    assert found, f"no upload answered {verdict}"
    return found[0]


def test_repair_without_a_mask_uses_the_detectors_defects_and_refuses_whole_image_fakes(served):
    url = served["url"]
    settings = httpx.post(f"{url}/metadata", json={}, timeout=30).json()["repairer"]
    cfg = load_config(served["root"] / "params.yaml")  # what the bento was built with
    assert settings["local_max_area"] == cfg.repair.local_max_area
    fakes = sorted((served["root"] / "data" / "fakes").glob("*/images/*.png"))[::7]
    tried = 0
    for path in fakes[:24]:
        image = path.read_bytes()
        seen = httpx.post(f"{url}/localize", files={"image": image}, timeout=30)
        if seen.headers["x-verdict"] != "fake":
            continue
        tried += 1
        r = httpx.post(f"{url}/repair", files={"image": image}, timeout=30)
        assert r.status_code == 200 and r.headers["x-verdict"] == "fake", r.text
        if float(seen.headers["x-defect-area"]) > cfg.repair.local_max_area:  # generated as a whole
            assert r.headers["x-stopped"] == "whole-image" and r.content == image
            assert r.headers["x-reason"] == "generated as a whole: nothing local to repair"
            assert r.headers["x-mask-area"] == "0" and r.headers["x-iterations"] == "0"
        else:
            assert Image.open(io.BytesIO(r.content)).size == (28, 28)
            assert r.headers["x-stopped"] in {"below-threshold", "no-region", "no-improvement", "max-iterations"}
            assert 0 <= int(r.headers["x-iterations"]) <= cfg.repair.iterations
    assert tried, "the served detector called none of 24 generated samples fake"


def test_repair_returns_an_image_it_does_not_call_fake_byte_for_byte(served):
    url = served["url"]
    reals = sorted((served["root"] / "data" / "real" / "images").glob("*.png"))
    real = _one_called(url, reals, "real")
    jpeg30 = _png(Image.open(io.BytesIO(real)), "JPEG", quality=30)
    for upload, stopped in ((real, "not-fake"), (jpeg30, "uncertain")):
        r = httpx.post(f"{url}/repair", files={"image": upload}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.content == upload and r.headers["x-stopped"] == stopped and r.headers["x-reason"]
        assert r.headers["x-mask-area"] == "0"


def test_detect_reads_the_history_and_is_uncertain_outside_the_validated_conditions(served):
    url = served["url"]
    envelope = httpx.post(f"{url}/metadata", json={}, timeout=30).json()["envelope"]
    real = Image.open(_real(served["root"]))
    tiny = real.resize((7, 7), Image.Resampling.BICUBIC).resize((28, 28), Image.Resampling.BICUBIC)
    uploads = {
        "png": _png(real),
        "jpeg70": _png(real, "JPEG", quality=70),
        "jpeg30": _png(real, "JPEG", quality=30),
        "up2": _png(real.resize((56, 56), Image.Resampling.BICUBIC)),
        "7x7": _png(tiny),
        "fake": _generated(served["root"]).read_bytes(),
    }
    answers = dict(zip(uploads, _detect(url, list(uploads.values()))))
    png, jpeg70, jpeg30, up2, small, fake = answers.values()
    assert png["history"] == {
        "format": "PNG",
        "mode": "L",
        "original_size": [28, 28],
        "scale": 1.0,
        "jpeg_quality": None,
        "jpeg_standard_table": False,
        "upscaled_by": 1,
        "inside": True,
        "reasons": [],
    }
    for a in (png, jpeg70, fake):
        assert a["verdict"] in {"real", "fake"} and a["is_fake"] == (a["p_fake"] >= a["threshold"])
    assert fake["history"]["inside"] and fake["history"]["upscaled_by"] == 1
    assert jpeg70["history"]["format"] == "JPEG" and jpeg70["history"]["jpeg_quality"] == 70
    assert jpeg70["history"]["jpeg_standard_table"]
    assert up2["history"]["original_size"] == [56, 56] and up2["history"]["scale"] == 0.5
    if envelope["max_downscale"] < 2:  # a 56x56 upload is shrunk x2: outside what the gate validated
        assert up2["verdict"] == "uncertain" and up2["is_fake"] is None, up2
        assert any("shrunk x2.0" in r for r in up2["reasons"]), up2["reasons"]
    else:
        assert up2["verdict"] in {"real", "fake"} and up2["history"]["inside"] and not up2["reasons"], up2
    for a, reason in ((jpeg30, "JPEG quality about 30"), (small, "enlarged about x4")):
        assert a["verdict"] == "uncertain" and a["is_fake"] is None, a
        assert any(reason in r for r in a["reasons"]), a["reasons"]
    assert small["history"]["upscaled_by"] == 4


def test_metadata_names_the_champions_their_thresholds_and_promotion_metrics(served):
    root = served["root"]
    meta = httpx.post(f"{served['url']}/metadata", json={}, timeout=30).json()
    detector, repairer = _champion(root, "gandefect-detector"), _champion(root, "gandefect-repairer")
    assert meta["detector"]["version"] == str(detector.version)
    assert meta["repairer"]["version"] == str(repairer.version)
    assert meta["detector"]["threshold"] == pytest.approx(float(detector.tags["threshold"]), abs=1e-5)
    assert meta["detector"]["data_version"] == detector.tags["data_version"]
    assert "auc_seen" in meta["detector"]["metrics"] and "psnr_mask" in meta["repairer"]["metrics"]
    assert meta["limits"] == {"max_bytes": int(0.5 * 2**20), "max_pixels": 4_000_000, "max_images": 8}


def _bad_cases(root: Path):
    good = _generated(root).read_bytes()
    truncated = good[: len(good) // 2]
    bomb = _png(Image.new("L", (2500, 2500)))  # 6.25 M pixels in a few KB
    huge = np.random.default_rng(1).integers(0, 256, 700_000, dtype=np.uint8).tobytes()
    tiff = _png(Image.new("RGB", (30, 30)), "TIFF")
    # BentoML itself would download a URL given as a text value; the service refuses it
    text_part = b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nhttp://example.com/a.png\r\n--b--\r\n'
    return [
        (
            "not an image",
            "/detect",
            {"files": {"images": ("x.jpg", b"this is not an image", "image/jpeg")}},
            400,
            "not an image",
        ),
        ("truncated PNG", "/localize", {"files": {"image": ("t.png", truncated, "image/png")}}, 400, "truncated"),
        ("empty file", "/repair", {"files": {"image": ("e.png", b"", "image/png")}}, 400, "empty"),
        ("empty body", "/detect", {"content": b""}, 400, "empty request"),
        ("no image field", "/localize", {"files": {"picture": ("a.png", good, "image/png")}}, 400, "picture"),
        ("JSON instead of a file", "/repair", {"json": {"image": "http://example.com/a.png"}}, 400, "multipart"),
        (
            "a text value (a URL) as the image",
            "/localize",
            {"content": text_part, "headers": {"Content-Type": "multipart/form-data; boundary=b"}},
            400,
            "uploaded file",
        ),
        ("too many pixels", "/detect", {"files": {"images": ("b.png", bomb, "image/png")}}, 400, "pixels"),
        ("upload over the size cap", "/detect", {"files": {"images": ("h.png", huge, "image/png")}}, 413, "limit"),
        ("unsupported format", "/detect", {"files": {"images": ("a.tiff", tiff, "image/tiff")}}, 400, "TIFF"),
        ("too many images", "/detect", {"files": [("images", ("a.png", good, "image/png"))] * 9}, 400, "at most 8"),
        (
            "mask of another size",
            "/repair",
            {"files": {"image": good, "mask": _png(Image.new("L", (13, 9), 255))}},
            400,
            "mask",
        ),
        ("empty mask", "/repair", {"files": {"image": good, "mask": _png(Image.new("L", (28, 28), 0))}}, 400, "empty"),
        # multipart framing (each was a 500 before)
        ("no boundary", "/detect", _framed(good, "multipart/form-data"), 400, "needs a boundary"),
        (
            "a boundary that does not match the body",
            "/localize",
            _framed(good, "multipart/form-data; boundary=other"),
            400,
            "not valid multipart",
        ),
        (
            "a boundary over 70 characters",
            "/repair",
            _framed(good, "multipart/form-data; boundary=" + "b" * 71, boundary=b"b" * 71),
            400,
            "1 to 70",
        ),
        ("a 5,000-character field name", "/detect", _framed(good, name=b"n" * 5000), 400, "not valid multipart"),
        (
            "metadata with a malformed multipart body",
            "/metadata",
            {"content": b"null", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
            400,
            "not valid multipart",
        ),
        (
            "metadata with malformed JSON",
            "/metadata",
            {"content": b"{bad", "headers": {"Content-Type": "application/json"}},
            400,
            "Invalid JSON",
        ),
        ("no such route", "/detekt", {"json": {}}, 404, "no route /detekt"),
    ]


def _framed(
    image: bytes,
    content_type: str = "multipart/form-data; boundary=xyz",
    boundary: bytes = b"xyz",
    name: bytes = b"images",
) -> dict:
    """httpx arguments for a hand-framed multipart body (one image part) under `content_type`."""
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name + b'"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + image + b"\r\n--" + boundary + b"--\r\n"
    )
    return {"content": body, "headers": {"Content-Type": content_type}}


def test_bad_input_gets_a_json_4xx_naming_the_problem_and_the_server_keeps_answering(served):
    url = served["url"]
    failures = []
    for name, route, kwargs, status, snippet in _bad_cases(served["root"]):
        r = httpx.post(f"{url}{route}", timeout=30, **kwargs)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
        if r.status_code != status or not body or snippet not in body.get("error", "") or body.get("status") != status:
            failures.append(f"{name}: {r.status_code} {r.text[:200]}")
        _ready(url)
    for method, route in (("GET", "/detect"), ("PUT", "/metadata"), ("POST", "/readyz")):
        r = httpx.request(method, f"{url}{route}", timeout=30)
        if r.status_code != 405 or f"{method} is not allowed on {route}" not in r.json().get("error", ""):
            failures.append(f"{method} {route}: {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    ok = httpx.post(f"{url}/detect", files={"images": _generated(served["root"]).read_bytes()}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()) == 1
    assert "Traceback" not in "".join(failures)


def test_page_docs_and_openapi_are_served(served):
    url = served["url"]
    page = httpx.get(f"{url}/", timeout=30)
    assert page.status_code == 200 and 'id="drop"' in page.text and "/repair" in page.text
    assert httpx.get(f"{url}/docs", timeout=30).status_code == 200
    spec = httpx.get(f"{url}/docs.json", timeout=30).json()
    assert {"/detect", "/localize", "/repair", "/metadata"} <= set(spec["paths"])


def test_the_bento_carries_the_models_and_a_rebuild_of_the_same_champions_is_reused(served):
    import tarfile

    with tarfile.open(served["archive"]) as archive:
        weights = {Path(name).name for name in archive.getnames() if name.endswith(".pt")}
    assert weights == {"detector.pt", "repairer.pt"}  # the server above runs from this archive alone
    served_store = served["base"] / "bentoml-served" / "models"
    assert {p.name for p in served_store.iterdir()} == {"gandefect-detector", "gandefect-repairer"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(served["base"] / "bentoml"))
        again = run_cli(served["root"], "build-bento", check=True)
    assert "reused" in again.stdout and served["tag"] in again.stdout


@pytest.mark.browser
def test_web_page_in_headless_chromium_shows_score_map_and_repair(served):
    with chromium_page() as page:
        page.goto(served["url"] + "/")
        page.wait_for_function("document.getElementById('models').textContent.includes('detector v')")
        page.set_input_files("#file", str(_generated(served["root"])))
        page.wait_for_selector("#overlay[data-ready='1']", timeout=30_000)
        score = page.text_content("#score")
        assert score.endswith("%") and 0 <= float(score[:-1]) <= 100
        assert page.text_content("#verdict") in {"generated", "real"}
        assert "PNG 28\u00d728" in page.text_content("#history")
        for image in ("#original", "#repaired"):
            page.wait_for_function(f"document.querySelector('{image}').naturalWidth > 0")
        drawn = page.evaluate("""() => {
            const c = document.getElementById('overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let lit = 0; for (let i = 0; i < d.length; i += 4) lit += d[i] + d[i + 1] + d[i + 2] > 0;
            return lit; }""")
        assert drawn > 0  # the image and its defect map were painted
        assert not page.is_visible("#error")
        # the map's caption agrees with the verdict: defects only on an image called generated
        regions = {"generated": "defects", "real": "highest-scoring"}[page.text_content("#verdict")]
        assert page.get_attribute("#defect-note", "data-regions") == regions
        page.set_input_files("#file", str(_called_real(served["url"], served["root"])))
        page.wait_for_function("document.getElementById('history').dataset.verdict === 'real'", timeout=30_000)
        page.wait_for_selector("#overlay[data-ready='1']", timeout=30_000)
        assert page.get_attribute("#defect-note", "data-regions") == "highest-scoring"
        assert page.text_content("#defect-note").startswith("no defect marked: the image as a whole is called real")
        # a heavily compressed upload: the page says uncertain, and why
        q30 = served["base"] / "q30.jpg"
        Image.open(_real(served["root"])).save(q30, "JPEG", quality=30)
        page.set_input_files("#file", str(q30))
        page.wait_for_function("document.getElementById('history').dataset.verdict === 'uncertain'", timeout=30_000)
        assert page.text_content("#verdict") == "uncertain"
        assert "JPEG quality about 30" in page.text_content("#history")
        page.wait_for_function("document.getElementById('repair-note').textContent.includes('unchanged')")
        # a generated upload: the repair note agrees with the API on whether it was generated as a whole
        sample = _generated(served["root"])
        stopped = httpx.post(f"{served['url']}/repair", files={"image": sample.read_bytes()}, timeout=30).headers[
            "x-stopped"
        ]
        page.set_input_files("#file", str(sample))
        page.wait_for_function("document.getElementById('history').dataset.verdict !== 'uncertain'", timeout=30_000)
        page.wait_for_selector("#overlay[data-ready='1']", timeout=30_000)
        expected = (
            "returned unchanged: generated as a whole"
            if stopped == "whole-image"
            else {
                "not-fake": "returned unchanged: not called generated",
                "uncertain": "returned unchanged: the verdict is uncertain",
            }.get(stopped, "rewritten")
        )
        page.wait_for_function(
            f"document.getElementById('repair-note').textContent.includes({json.dumps(expected)})", timeout=30_000
        )


def test_gandefect_serve_reuses_the_bento_and_answers_on_the_given_port(served):
    import signal

    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(served["base"] / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    log = served["base"] / "gandefect-serve.log"
    proc = start_cli(served["root"], "serve", "--port", str(port), env=env, log=log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, 180, log=log.read_text)
        meta = httpx.post(f"http://127.0.0.1:{port}/metadata", json={}, timeout=30).json()
        assert meta["detector"]["version"] == str(_champion(served["root"], "gandefect-detector").version)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the command and the `bentoml serve` it started
        proc.wait(30)
    assert f"serving {served['tag']}" in log.read_text()
