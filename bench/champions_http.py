"""Two served champions side by side over HTTP, on a generator family's held-out samples.

For each bento (by default the two newest `gandefect` bentos of the local BentoML store: the
champions before and after a retrain), in one run: `bentoml serve` it on a free port, upload
the family's test-split samples and the real test images as PNG files to `detect`, and report
at the served threshold the share of the family called fake (tpr), the real images called fake
(fpr), mean p_fake and the AUC. After the family's uploads (a traffic sample made of that family
alone), `gandefect status --traffic` reads the scores that server served and compares them with
the validation histogram of the detector it serves.

    .venv/bin/python bench/champions_http.py --family ppca [--bentos OLD_TAG NEW_TAG]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import bentoml
import httpx
import numpy as np
from sklearn.metrics import roc_auc_score

from gandefect.config import load_config
from gandefect.data.fakes import fakes_root, read_fakes
from gandefect.data.snapshot import read_manifest
from gandefect.lifecycle import bento


def newest_bentos(n: int = 2) -> list[str]:
    found = sorted(bentoml.bentos.list("gandefect"), key=lambda b: b.info.creation_time)
    return [str(b.tag) for b in found[-n:]]


def detect(url: str, paths: list[Path], batch: int = 32) -> list[dict]:
    answers = []
    with httpx.Client(timeout=120) as client:
        for i in range(0, len(paths), batch):
            files = [("images", (p.name, p.read_bytes(), "image/png")) for p in paths[i : i + batch]]
            r = client.post(f"{url}/detect", files=files)
            r.raise_for_status()
            answers += r.json()
    return answers


def measure(tag: str, family: list[Path], real: list[Path], root: Path) -> dict:
    port = bento.free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "reports" / f"champions-http-{port}.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(bento.serve_command(tag, port), stdout=out, stderr=subprocess.STDOUT)
        try:
            bento.wait_ready(url, proc, 180, log=log.read_text)
            fakes = detect(url, family)  # the traffic sample status reads: the family alone
            status = subprocess.run(
                [str(Path(sys.executable).parent / "gandefect"), "status", "--traffic", url],
                capture_output=True,
                text=True,
                cwd=root,
                check=False,
            )
            reals = detect(url, real)
        finally:
            proc.terminate()
            proc.wait(30)
    p_fake, p_real = np.array([a["p_fake"] for a in fakes]), np.array([a["p_fake"] for a in reals])
    drift = [line for line in status.stdout.splitlines() if line.startswith("drift:")]
    return {
        "tag": tag,
        "version": fakes[0]["model_version"],
        "threshold": fakes[0]["threshold"],
        "tpr": float(np.mean([a["verdict"] == "fake" for a in fakes])),
        "fpr_real": float(np.mean([a["verdict"] == "fake" for a in reals])),
        "mean_p_fake": float(p_fake.mean()),
        "auc": float(roc_auc_score(np.r_[np.zeros(len(p_real)), np.ones(len(p_fake))], np.r_[p_real, p_fake])),
        "drift": drift[0] if drift else status.stdout.strip().splitlines()[-1:] or status.stderr,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--family", required=True, help="a generator family in data/fakes (e.g. one added with ingest-fakes)"
    )
    ap.add_argument("--bentos", nargs="+", help="bento tags (default: the two newest gandefect bentos)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    cfg = load_config(args.params)
    fakes = read_fakes(cfg)
    held = fakes[(fakes["generator"] == args.family) & (fakes["split"] == "test")]
    if held.empty:
        sys.exit(f"no test-split samples of {args.family!r} in data/fakes")
    real = read_manifest(cfg.real_dir)
    real = real[real["split"] == "test"]
    family = [fakes_root(cfg) / p for p in held["path"]]
    reals = [cfg.real_dir / p for p in real["path"]]
    tags = args.bentos or newest_bentos()
    print(f"{len(family)} held-out {args.family} samples and {len(reals)} real test images, as PNG uploads")
    rows = [measure(tag, family, reals, cfg.root.resolve()) for tag in tags]
    print(
        f"\n| bento | detector | threshold | {args.family} called fake | reals called fake | "
        f"mean p_fake ({args.family}) | AUC |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tag']} | v{r['version']} | {r['threshold']:.4f} | {r['tpr']:.3f} | {r['fpr_real']:.3f} | "
            f"{r['mean_p_fake']:.3f} | {r['auc']:.4f} |"
        )
    print()
    for r in rows:
        print(f"v{r['version']} `gandefect status --traffic`: {r['drift']}")


if __name__ == "__main__":
    main()
