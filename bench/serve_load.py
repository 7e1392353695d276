"""Throughput and latency of the served `detect` API against the same model in-process.

Builds the bento of the current champions (or reuses it), starts `bentoml serve` on a free
port, then measures in one run:
  - in-process: the detector the bento carries, scoring batches of 32 (one torch thread,
    as each service worker uses), images/s;
  - over HTTP: `detect` with one generated PNG per request at concurrency 1, 8 and 32
    (aiohttp client on this machine), requests/s and p50 / p99 latency; and requests of 32
    images at concurrency 8, in images/s;
  - the ratio of HTTP requests/s to in-process images/s at each concurrency;
  - CPU milliseconds per request spent by the service's processes and by the client, which
    says where the time goes (and what the service would do with the cores to itself);
  - the noisy neighbour: one-image 28x28 requests at concurrency 8, quiet and then while 2
    other clients (a process of their own) loop valid 25-megapixel PNG uploads, p50 / p99 and
    errors of the small requests side by side, and what the large uploads got.
Rounds alternate between in-process and HTTP so drift on a shared machine hits both alike.

    .venv/bin/python bench/serve_load.py [--seconds 8] [--rounds 2] [--url http://host:port]
    .venv/bin/python bench/serve_load.py --only-noisy      # just the noisy-neighbour round
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def generated_png(cfg) -> bytes:
    """One generated image from the fake sets (the input the service is for); noise if there are none."""
    from PIL import Image

    fakes = sorted((cfg.root / "data" / "fakes").glob("*/images/*.png"))
    if fakes:
        return fakes[0].read_bytes()
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (cfg.data.image_size,) * 2, dtype=np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def in_process(detector, image: np.ndarray, seconds: float, batch: int = 32) -> float:
    """images/s of detector.score on batches of `batch` copies of the image."""
    x = np.repeat(image[None], batch, axis=0)
    detector.score(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        detector.score(x)
        n += batch
    return n / (time.perf_counter() - start)


async def http_load(url: str, png: bytes, concurrency: int, seconds: float, per_request: int = 1) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors = 0

    async def worker(session: aiohttp.ClientSession, deadline: float) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            form = aiohttp.FormData()
            for _ in range(per_request):
                form.add_field("images", png, filename="image.png", content_type="image/png")
            start = time.perf_counter()
            async with session.post(f"{url}/detect", data=form) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session, time.perf_counter() + 1.0) for _ in range(concurrency)))  # warm-up
        latencies.clear()
        start = time.perf_counter()
        await asyncio.gather(*(worker(session, start + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "requests": len(ms),
        "rps": len(ms) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors,
    }


def big_png(side: int = 5000) -> bytes:
    """A valid side x side RGB PNG (25 megapixels at 5000) that stays under the default 10 MiB
    upload limit: smooth content, as an enlarged photo would be."""
    from PIL import Image

    rng = np.random.default_rng(1)
    small = Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    small.resize((side, side), Image.Resampling.BILINEAR).save(buf, "PNG")
    return buf.getvalue()


def heavy_clients(url: str, png: bytes, clients: int, seconds: float, out) -> None:
    """`clients` threads, each looping `detect` uploads of `png` for `seconds` (run in a process
    of its own, so the upload work does not slow the measuring client's event loop)."""
    import threading

    import httpx

    rows: list[tuple[int, float]] = []

    def loop() -> None:
        deadline = time.perf_counter() + seconds
        with httpx.Client(timeout=120) as client:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                status = client.post(f"{url}/detect", files={"images": ("big.png", png, "image/png")}).status_code
                rows.append((status, time.perf_counter() - start))

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out.put(rows)


def noisy_neighbour(url: str, small: bytes, big: bytes, seconds: float, server, clients: int = 2) -> dict:
    """The small requests' figures while `clients` others loop the big upload, and the big ones'."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    # the heavy clients start first and run past the measured window on both sides
    proc = ctx.Process(target=heavy_clients, args=(url, big, clients, seconds + 6.0, queue))
    proc.start()
    time.sleep(3.0)
    row = measured(url, small, 8, seconds, server)
    heavy = queue.get(timeout=seconds + 300)
    proc.join(60)
    ms = np.array([s for _, s in heavy]) * 1000
    row.update(
        heavy_requests=len(heavy),
        heavy_errors=sum(1 for st, _ in heavy if st != 200),
        heavy_p50=float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        heavy_statuses=sorted({st for st, _ in heavy}),
    )
    return row


def tree_cpu(proc) -> float:
    """CPU seconds (user + system) of a process and its children: the service's workers."""
    import psutil

    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measured(url: str, png: bytes, concurrency: int, seconds: float, server, per_request: int = 1) -> dict:
    """http_load plus the CPU milliseconds per request spent by the service and by this client."""
    server_before, client_before = tree_cpu(server) if server else 0.0, time.process_time()
    row = asyncio.run(http_load(url, png, concurrency, seconds, per_request))
    n = max(row["requests"], 1)
    row["client_ms"] = (time.process_time() - client_before) * 1000 / n
    row["server_ms"] = (tree_cpu(server) - server_before) * 1000 / n if server else float("nan")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--url", help="an already running service (default: build and start one)")
    ap.add_argument("--only-noisy", action="store_true", help="only the quiet and noisy-neighbour rounds")
    args = ap.parse_args()

    import bentoml
    import torch
    from PIL import Image

    from gandefect.config import load_config
    from gandefect.lifecycle import bento

    cfg = load_config(args.params)
    built = bento.build(cfg)
    print(f"bento {built.tag} ({'reused' if built.reused else 'built'})", flush=True)
    torch.set_num_threads(1)  # as each service worker
    detector = torch.load(Path(bentoml.models.get(built.models["detector"]).path) / "detector.pt", weights_only=False)
    png = generated_png(cfg)
    image = np.asarray(Image.open(io.BytesIO(png)).convert(cfg.data.mode))

    proc = None
    url = args.url
    if url is None:
        port = bento.free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            bento.serve_command(built.tag, port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "BENTOML_DO_NOT_TRACK": "true"},
        )
    try:
        bento.wait_ready(url, proc)
        import psutil

        server = psutil.Process(proc.pid) if proc is not None else None
        local, http, multi, quiet, noisy = [], {c: [] for c in args.concurrency}, [], [], []
        big = big_png()
        print(f"noisy neighbour: 2 clients looping a {len(big):,}-byte 5000x5000 PNG", flush=True)
        for r in range(args.rounds):
            quiet.append(measured(url, png, 8, args.seconds, server))
            noisy.append(noisy_neighbour(url, png, big, args.seconds, server))
            print(
                f"round {r + 1}/{args.rounds}: 28x28 at c=8 p99 quiet {quiet[-1]['p99']:.1f} ms, "
                f"noisy {noisy[-1]['p99']:.1f} ms ({noisy[-1]['heavy_requests']} big uploads)",
                flush=True,
            )
            if args.only_noisy:
                continue
            local.append(in_process(detector, image, args.seconds))
            for c in args.concurrency:
                http[c].append(measured(url, png, c, args.seconds, server))
            multi.append(measured(url, png, 8, args.seconds, server, per_request=32))
            print(
                f"round {r + 1}/{args.rounds}: in-process {local[-1]:.0f} images/s; "
                + "; ".join(f"c={c} {http[c][-1]['rps']:.0f} req/s" for c in args.concurrency),
                flush=True,
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    print("\nnoisy neighbour: one-image 28x28 requests at concurrency 8 (median of rounds; errors summed)")
    print(f"{'round':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}   big uploads (2 clients)")
    for label, rows in (("quiet", quiet), ("noisy", noisy)):
        med = {k: statistics.median(r[k] for r in rows) for k in ("rps", "p50", "p99")}
        extra = ""
        if label == "noisy":
            extra = (
                f"   {sum(r['heavy_requests'] for r in rows)} answered, "
                f"{sum(r['heavy_errors'] for r in rows)} errors, p50 {statistics.median(r['heavy_p50'] for r in rows):.0f} ms, "
                f"statuses {sorted({s for r in rows for s in r['heavy_statuses']})}"
            )
        print(
            f"{label:>8} {med['rps']:>8.0f} {med['p50']:>8.1f} {med['p99']:>8.1f} "
            f"{sum(r['errors'] for r in rows):>6}{extra}"
        )
    print(f"worst round p99: quiet {max(r['p99'] for r in quiet):.1f} ms, noisy {max(r['p99'] for r in noisy):.1f} ms")
    if args.only_noisy:
        return
    base = statistics.median(local)
    print(f"\nin-process detector.score, batch 32, 1 thread: {base:.0f} images/s (median of {len(local)})")
    print(
        f"{'concurrency':>11} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'ratio':>7} "
        f"{'server CPU ms/req':>17} {'client CPU ms/req':>17}"
    )

    def line(label: str, rows: list[dict], scale: int = 1, note: str = "") -> None:
        rps = statistics.median(r["rps"] for r in rows) * scale
        med = {k: statistics.median(r[k] for r in rows) for k in ("p50", "p99", "server_ms", "client_ms")}
        print(
            f"{label:>11} {rps:>8.0f} {med['p50']:>8.1f} {med['p99']:>8.1f} {sum(r['errors'] for r in rows):>6} "
            f"{rps / base:>7.3f} {med['server_ms']:>17.2f} {med['client_ms']:>17.2f}{note}"
        )

    for c, rows in http.items():
        line(str(c), rows)
    line("8 x 32 img", multi, 32, "   (images/s; CPU per 32-image request)")
    print(
        "ratio = HTTP requests/s (one image each) / in-process images/s at batch 32; "
        f"{os.cpu_count()} cores shared by the client and the service's worker processes"
    )


if __name__ == "__main__":
    sys.exit(main())
