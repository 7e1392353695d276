"""Verdicts in the wild, measured as a client: the served champion over HTTP, beside a baseline.

For each served model (this project's `gandefect serve`, and optionally a baseline: another
checkout whose own `gandefect serve` serves its champion), in one run:
  - the real test images and every generator's test samples are uploaded under every
    condition of gandefect.data.conditions, as a client sends them (real JPEG bytes for the
    JPEG conditions, the bytes of gandefect.evaluate.wild: the same files the in-process
    evaluation decodes), to `detect`;
  - at the served threshold: fpr_real (real images with p_fake >= threshold), tpr_fake of
    every generator (and the worst one), the share answered `uncertain`;
  - `repair` of every real test image under every condition: the share returned byte-identical;
  - `detect` of a JPEG q30 upload, of a 7x7 image scaled up to the model size, and of a PNG
    real and fake image: which are `uncertain`.
The champion's HTTP figures are compared with the in-process figures logged on its MLflow run
(largest difference), and the leave-one-family-out figures of that run are printed beside them.

    .venv/bin/python bench/wild_eval.py [--baseline ../other-checkout [--baseline-env BENTOML_HOME=...]]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from gandefect.config import GATED_CONDITIONS, load_config
from gandefect.data import conditions
from gandefect.detect.common import Labeled
from gandefect.evaluate.wild import WILD_SEED, verdict_metrics
from gandefect.lifecycle import bento

MEDIA = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# the conditions held to fpr_real <= 0.05 and tpr_fake >= 0.90: the gated ones
MUST = list(GATED_CONDITIONS)


class Server:
    """`gandefect serve` of one checkout (its own environment, store and champion) on a free port."""

    def __init__(self, root: Path, env: dict[str, str], label: str):
        self.root, self.label = root.resolve(), label
        self.port = bento.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = self.root / ".venv" / "bin" / "gandefect"
        (self.root / "reports").mkdir(exist_ok=True)  # git-ignored; the server's output goes there
        self.log = open(self.root / "reports" / f"wild-eval-{label}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(exe), "serve", "--port", str(self.port)],
            cwd=self.root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "BENTOML_DO_NOT_TRACK": "true", **env},
        )

    def wait(self) -> None:
        bento.wait_ready(self.url, self.proc, timeout=600, log=lambda: Path(self.log.name).read_text(errors="replace"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _media(data: bytes) -> str:
    from PIL import Image

    return MEDIA.get(Image.open(io.BytesIO(data)).format, "application/octet-stream")


def detect(client: httpx.Client, url: str, files: list[bytes], batch: int) -> list[dict]:
    out = []
    for i in range(0, len(files), batch):
        parts = [("images", (f"{i + k}", b, _media(b))) for k, b in enumerate(files[i : i + batch])]
        r = client.post(f"{url}/detect", files=parts)
        r.raise_for_status()
        out += r.json()
    return out


def figures(answers: list[dict], data: Labeled, condition: str) -> dict[str, float]:
    """The evaluation's own verdict figures (gandefect.evaluate.wild) from the served answers,
    plus the shares answered `uncertain` and the worst generator's name."""
    p = np.array([a["p_fake"] for a in answers])
    out = verdict_metrics(p, data, answers[0]["threshold"], condition)
    real = data.labels == 0
    uncertain = np.array([a.get("verdict") == "uncertain" for a in answers])
    out[f"uncertain_real_{condition}"] = float(uncertain[real].mean())
    out[f"uncertain_fake_{condition}"] = float(uncertain[~real].mean())
    tprs = {
        k.removeprefix(f"tpr_fake_{condition}_"): v for k, v in out.items() if k.startswith(f"tpr_fake_{condition}_")
    }
    out[f"worst_generator_{condition}"] = min(tprs, key=tprs.get)
    return out


def repair_identity(client: httpx.Client, url: str, files: list[bytes]) -> tuple[float, dict[str, int]]:
    """Share of uploads `repair` returns byte-identical, and the X-Stopped reasons."""
    same, stopped = 0, {}
    for b in files:
        r = client.post(f"{url}/repair", files=[("image", ("image", b, _media(b)))])
        r.raise_for_status()
        same += r.content == b
        reason = r.headers.get("X-Stopped", "?")
        stopped[reason] = stopped.get(reason, 0) + 1
    return same / len(files), stopped


def probes(client: httpx.Client, url: str, real: np.ndarray, fake: np.ndarray) -> list[dict]:
    """The must-be-uncertain and must-not-be-uncertain uploads."""
    from PIL import Image

    size = real.shape[1]
    tiny = (
        conditions.pil(real[0]).resize((7, 7), Image.Resampling.BICUBIC).resize((size, size), Image.Resampling.BICUBIC)
    )
    cases = {
        "JPEG q30 real": conditions.jpeg_bytes(conditions.pil(real[0]), 30),
        "7x7 scaled up to the model size": conditions.png_bytes(tiny),
        "PNG real": conditions.png_bytes(conditions.pil(real[1])),
        "PNG fake": conditions.png_bytes(conditions.pil(fake[0])),
    }
    rows = []
    for name, data in cases.items():
        answer = detect(client, url, [data], 1)[0]
        rows.append(
            {
                "upload": name,
                "verdict": answer.get("verdict", "(no verdict field)"),
                "reasons": "; ".join(answer.get("reasons", [])),
            }
        )
    return rows


def measure(server: Server, data: Labeled, names: list[str], batch: int, repair_n: int) -> dict:
    results: dict = {"conditions": {}, "repair": {}}
    with httpx.Client(timeout=120) as client:
        for name in names:
            started = time.perf_counter()
            files = conditions.client_bytes(data.images, name, WILD_SEED)
            results["conditions"].update(figures(detect(client, server.url, files, batch), data, name))
            reals = [f for f, label in zip(files, data.labels) if label == 0][:repair_n]
            results["repair"][name] = repair_identity(client, server.url, reals)
            print(
                f"  {server.label} {name}: fpr_real {results['conditions'][f'fpr_real_{name}']:.3f}, "
                f"tpr_fake (worst) {results['conditions'][f'tpr_fake_{name}']:.3f}, repair identical "
                f"{results['repair'][name][0]:.3f} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        real, fake = data.images[data.labels == 0], data.images[data.labels == 1]
        results["probes"] = probes(client, server.url, real, fake)
        results["metadata"] = client.post(f"{server.url}/metadata", json={}).json()
    return results


def logged_metrics(cfg, version: str) -> dict[str, float]:
    """The metrics the evaluation logged, in-process, on the run of the served detector version."""
    from gandefect.lifecycle import gates, tracking

    tracking.setup(cfg)
    return gates.version_metrics("gandefect-detector", version)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--baseline", type=Path, help="another checkout with its own .venv and champion (e.g. main's)")
    ap.add_argument(
        "--baseline-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the baseline's server (e.g. BENTOML_HOME=...)",
    )
    ap.add_argument("--repair-images", type=int, default=10**9, help="real test images per condition sent to repair")
    ap.add_argument("--out", type=Path, default=Path("reports/wild-eval.json"))
    args = ap.parse_args()

    from gandefect.stages.detectors import load_labeled

    cfg = load_config(args.params)
    data = load_labeled(cfg, "test")
    names = conditions.evaluated(cfg.detect.wild)
    print(
        f"test split: {int((data.labels == 0).sum())} real, {int(data.labels.sum())} generated "
        f"({len(set(data.generators.tolist())) - 1} generators); conditions: {', '.join(names)}",
        flush=True,
    )
    servers = [Server(cfg.root, {}, "champion")]
    if args.baseline:
        servers.append(Server(args.baseline, dict(kv.split("=", 1) for kv in args.baseline_env), "baseline"))
    results = {}
    try:
        for server in servers:  # one at a time: both measured alike on the same cores
            server.wait()
            print(f"{server.label}: {server.url} ready", flush=True)
            results[server.label] = measure(server, data, names, cfg.serve.max_images, args.repair_images)
            server.stop()
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.stop()
    report(cfg, results, names, data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwritten {args.out}")


def report(cfg, results: dict, names: list[str], data: Labeled) -> None:
    champ = results["champion"]
    base = results.get("baseline")
    version = champ["metadata"]["detector"]["version"]
    print(
        f"\n## Verdicts over HTTP at the served threshold (champion v{version}, threshold "
        f"{champ['metadata']['detector']['threshold']:.4f}"
        + (
            f"; baseline v{base['metadata']['detector']['version']}, threshold "
            f"{base['metadata']['detector']['threshold']:.4f}"
            if base
            else ""
        )
        + ")\n"
    )
    cols = ["condition", "fpr_real", "tpr_fake worst (generator)", "uncertain real", "repair identical"]
    if base:
        cols += ["baseline fpr_real", "baseline tpr_fake worst", "baseline repair identical"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for c in names:
        m = champ["conditions"]
        row = [
            c + (" *" if c in MUST else ""),
            f"{m[f'fpr_real_{c}']:.3f}",
            f"{m[f'tpr_fake_{c}']:.3f} ({m[f'worst_generator_{c}']})",
            f"{m[f'uncertain_real_{c}']:.3f}",
            f"{champ['repair'][c][0]:.3f}",
        ]
        if base:
            b = base["conditions"]
            row += [
                f"{b[f'fpr_real_{c}']:.3f}",
                f"{b[f'tpr_fake_{c}']:.3f} ({b[f'worst_generator_{c}']})",
                f"{base['repair'][c][0]:.3f}",
            ]
        print("| " + " | ".join(row) + " |")
    m = champ["conditions"]
    fpr_ok = all(m[f"fpr_real_{c}"] <= 0.05 for c in MUST)
    tpr_ok = all(m[f"tpr_fake_{c}"] >= 0.90 for c in MUST)
    print(
        f"\n* the conditions with targets: fpr_real <= 0.05 {'met' if fpr_ok else 'NOT met'}; "
        f"tpr_fake >= 0.90 for every generator {'met' if tpr_ok else 'NOT met'}."
    )
    repair_ok = all(champ["repair"][c][0] >= 0.95 for c in names)
    print(
        f"repair leaves >= 95 % of real images byte-identical under every condition: {'met' if repair_ok else 'NOT met'} "
        f"(X-Stopped under jpeg75: {champ['repair']['jpeg75'][1]})"
    )

    logged = logged_metrics(cfg, version)
    diffs = {
        k: abs(v - logged[k])
        for k, v in m.items()
        if isinstance(v, float) and k in logged and k.startswith(("fpr_real_", "tpr_fake_"))
    }
    worst = max(diffs, key=diffs.get) if diffs else None
    print(
        f"\n## In-process (logged on the champion's run) vs HTTP: {len(diffs)} figures compared, largest "
        f"difference {diffs[worst]:.4f} ({worst})"
        if worst
        else "\n(no logged figures to compare)"
    )

    loo = {k.removeprefix("tpr_unseen_wild_"): v for k, v in logged.items() if k.startswith("tpr_unseen_wild_")}
    if loo:
        print(
            "\n## Leave-one-family-out (in-process, from the champion's run): each held-out family's samples "
            "called fake by the model that never saw it, worst gated condition; and clean AUC\n"
        )
        print("| family | tpr_unseen (worst condition) | auc_unseen |\n|---|---|---|")
        for f in sorted(loo):
            print(f"| {f} | {loo[f]:.3f} | {logged.get(f'auc_unseen_{f}', float('nan')):.4f} |")
    print("\n## Uncertain or not\n")
    for label, r in results.items():
        for row in r["probes"]:
            print(f"- {label}: {row['upload']}: {row['verdict']}" + (f" ({row['reasons']})" if row["reasons"] else ""))


if __name__ == "__main__":
    sys.exit(main())
