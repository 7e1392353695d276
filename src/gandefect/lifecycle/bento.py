"""The champions as a bento: export from the MLflow registry, build with BentoML, serve.

A bento carries the detector and repairer weights (a repairer without a champion is left out
and its API answers 503 with the reason: the detector that passed is served all the same), the calibrated thresholds and the metadata
they were promoted with, so serving it needs no MLflow store. Exported models are tagged
`<registered name>:v<version>-<run id>`: the same champion is exported once, and two MLflow
stores that both have a "version 1" never collide in BentoML's store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

import gandefect
from gandefect.config import Config
from gandefect.errors import BadInputError, ToolError
from gandefect.lifecycle import gates, registry, tracking
from gandefect.lifecycle.gates import CHAMPION
from gandefect.lifecycle.served import load_repairer, load_served_detector
from gandefect.names import DETECTOR_MODEL, REPAIRER_MODEL

SERVICE = "serving.service:GanDefect"
# serving/ sits beside src/ in the source tree gandefect is installed from (pip install -e .)
SOURCE_ROOT = registry.PACKAGE_DIR.parents[1]
BENTOFILE = SOURCE_ROOT / "serving" / "bentofile.yaml"


@dataclass
class Champion:
    name: str  # registered model name, also the BentoML model name
    version: str
    run_id: str
    tags: dict
    metrics: dict

    @property
    def tag(self) -> str:
        return f"{self.name}:v{self.version}-{self.run_id[:12]}"


def _why_none(name: str) -> str:
    """Why `name` has no champion, in words a user of the service can read."""
    latest = registry.latest_version(name)
    if latest is None:
        return f"{name} has no `{CHAMPION}`: none has been trained yet"
    why = latest.tags.get(gates.GATE_REASONS_TAG)
    return f"{name} has no `{CHAMPION}`: its newest version v{latest.version} " + (
        f"failed its gate ({why})" if why else "has not passed its gate"
    )


def champions(cfg: Config) -> tuple[dict[str, Champion], dict[str, str]]:
    """The detector's and the repairer's `champion` versions, with the metrics they were promoted
    with, and role -> the reason for a repairer that has none (the service is built without it).
    A detector without a champion is an error: there is nothing to serve."""
    mlflow = tracking.setup(cfg)
    client = mlflow.MlflowClient()
    found, missing = {}, {}
    for role, name in (("detector", DETECTOR_MODEL), ("repairer", REPAIRER_MODEL)):
        try:
            mv = client.get_model_version_by_alias(name, CHAMPION)
        except mlflow.exceptions.MlflowException:
            if role == "repairer":
                missing[role] = _why_none(name)
                continue
            raise BadInputError(
                f"{name} has no `{CHAMPION}`: run `gandefect run` (or train and "
                f"`gandefect promote`) before building the service"
            ) from None
        metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
        found[role] = Champion(name, str(mv.version), mv.run_id or "norun", dict(mv.tags), dict(metrics))
    return found, missing


def _stored(tag: str):
    import bentoml  # lazy: importing BentoML takes seconds, and only building needs it

    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        return None


def export_models(cfg: Config, found: dict[str, Champion]) -> dict[str, str]:
    """Copy each champion into BentoML's model store (once per version); returns role -> tag."""
    import bentoml  # lazy: importing BentoML takes seconds, and only building needs it

    tags = {}
    for role, champ in found.items():
        tags[role] = champ.tag
        if _stored(champ.tag) is not None:
            continue
        uri = f"models:/{champ.name}/{champ.version}"
        obj = load_served_detector(cfg, uri) if role == "detector" else load_repairer(cfg, uri).net
        meta = {
            "registered_model": champ.name,
            "version": champ.version,
            "run_id": champ.run_id,
            "tags": champ.tags,
            "metrics": {k: float(v) for k, v in champ.metrics.items()},
            "input": {"size": cfg.data.image_size, "mode": cfg.data.mode, "resize": cfg.data.resize},
        }
        if role == "detector" and getattr(obj, "envelope", None) is not None:
            meta["envelope"] = obj.envelope.to_dict()  # the conditions its gate validated (else: `uncertain`)
        if role == "repairer":
            meta["repair"] = {
                "iterations": cfg.repair.iterations,
                "max_area": cfg.repair.max_area,
                "dilate": cfg.spliced.dilate,
                "local_max_area": cfg.repair.local_max_area,
            }
        with bentoml.models.create(
            champ.tag, metadata=meta, labels={"registered_model": champ.name, "mlflow_version": champ.version}
        ) as model:
            torch.save(obj, model.path_of(f"{role}.pt"))
            Path(model.path_of("metadata.json")).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return tags


def bento_args(cfg: Config, tags: dict[str, str], missing: dict[str, str] | None = None) -> dict[str, str]:
    """The build arguments the service reads (`bentoml.use_arguments`); stored in the bento. A
    repairer without a champion is left out, with the reason its `repair` answers (503)."""
    return {
        "detector": tags["detector"],
        "repairer": tags.get("repairer", ""),
        "repairer_unavailable": (missing or {}).get("repairer", ""),
        "max_bytes": str(int(cfg.serve.max_upload_mb * 2**20)),
        "max_pixels": str(cfg.serve.max_pixels),
        "max_images": str(cfg.serve.max_images),
        "device": cfg.device,
    }


def source_digest() -> str:
    """Hash of the code a bento carries (serving/ and src/gandefect/): a changed service means a new bento."""
    h = hashlib.sha256()
    files = [*sorted((SOURCE_ROOT / "serving").rglob("*")), *sorted((SOURCE_ROOT / "src" / "gandefect").rglob("*.py"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(SOURCE_ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _matching_bento(name: str, args: dict[str, str], digest: str):
    """The newest bento `name` built from the same models, limits and code, if any."""
    import bentoml  # lazy: importing BentoML takes seconds, and only building needs it

    try:
        bentos = bentoml.list(name)
    except bentoml.exceptions.NotFound:
        return None
    candidates = []
    for bento in bentos:
        info = bento.info
        if {k: str(v) for k, v in (info.args or {}).items()} == args and info.labels.get("source_digest") == digest:
            candidates.append(bento)
    return max(candidates, key=lambda b: b.info.creation_time) if candidates else None


@dataclass
class BuiltBento:
    tag: str
    path: Path
    reused: bool
    models: dict[str, str]
    unavailable: dict[str, str] = field(default_factory=dict)  # role -> why it is not served


def build(cfg: Config, force: bool = False) -> BuiltBento:
    """Export the champions and build the bento, reusing one built from the same champions."""
    import bentoml  # lazy: importing BentoML takes seconds, and only building needs it

    if not BENTOFILE.is_file():
        raise BadInputError(
            f"serving/bentofile.yaml not found beside gandefect's source ({SOURCE_ROOT}): "
            "install gandefect from its source tree with `pip install -e .`"
        )
    found, missing = champions(cfg)
    tags = export_models(cfg, found)
    args = bento_args(cfg, tags, missing)
    digest = source_digest()
    existing = None if force else _matching_bento(cfg.serve.bento_name, args, digest)
    if existing is not None:
        return BuiltBento(str(existing.tag), Path(existing.path), True, tags, missing)
    # The real `bentoml build`, in its own process: it imports the service module with these arguments.
    command = [
        _bentoml_cli(),
        "build",
        "-f",
        str(BENTOFILE),
        "-o",
        "tag",
        "--name",
        cfg.serve.bento_name,
        "--label",
        f"gandefect_version={gandefect.__version__}",
        "--label",
        f"source_digest={digest}",
    ]
    for role, champ in found.items():
        command += ["--label", f"{role}_version={champ.version}"]
    for key, value in args.items():
        command += ["--arg", f"{key}={value}"]
    proc = subprocess.run(
        [*command, str(SOURCE_ROOT)],
        capture_output=True,
        text=True,
        env={**os.environ, "BENTOML_DO_NOT_TRACK": "true"},
        check=False,
    )
    if proc.returncode != 0:
        raise ToolError(f"bentoml build failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    tag = proc.stdout.strip().splitlines()[-1].replace("__tag__:", "").strip()
    return BuiltBento(tag, Path(bentoml.get(tag).path), False, tags, missing)


def _bentoml_cli() -> str:
    """The `bentoml` command of this Python environment (beside its interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / "bentoml"
    found = str(beside) if beside.is_file() else shutil.which("bentoml")
    if found is None:
        raise ToolError("the `bentoml` command is not installed in this environment: run ./scripts/install.sh")
    return found


def serve_command(tag: str, port: int) -> list[str]:
    return [_bentoml_cli(), "serve", tag, "--port", str(port)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 180, log=None) -> None:
    """Poll `url`/readyz until it answers 200; a ToolError if the server exits or times out.

    `log`, if given, returns text (the server's output) to put in the error."""
    deadline = time.time() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ToolError(f"the server exited with code {proc.returncode}" + (f":\n{log()[-3000:]}" if log else ""))
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            raise ToolError(f"{url} not ready after {timeout:.0f} s" + (f":\n{log()[-3000:]}" if log else ""))
        time.sleep(1)
