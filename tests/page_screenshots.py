"""Screenshots of the served web page in headless Chromium, one per uploaded image, for the docs and
for a look at what a user sees (the score, the verdict, the map and the repair).

    .venv/bin/python -m tests.page_screenshots --url http://127.0.0.1:3000 --out DIR IMAGE [IMAGE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.conftest import chromium_page


def screenshots(url: str, images: list[Path], out: Path) -> list[tuple[Path, str, str]]:
    """(screenshot, verdict, the map's caption) per image."""
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with chromium_page(viewport={"width": 1100, "height": 720}) as page:
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('models').textContent.includes('detector v')")
        for image in images:
            page.evaluate("document.getElementById('overlay').dataset.ready = ''")
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#overlay[data-ready='1']", timeout=60_000)
            page.wait_for_function("document.querySelector('#repaired').complete")
            target = out / f"{image.stem}.png"
            page.screenshot(path=str(target), full_page=True)
            shots.append((target, page.text_content("#verdict"), page.text_content("#defect-note")))
    return shots


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("images", type=Path, nargs="+")
    args = ap.parse_args()
    for path, verdict, note in screenshots(args.url, args.images, args.out):
        print(f"{path}: {verdict}; map: {note}")
