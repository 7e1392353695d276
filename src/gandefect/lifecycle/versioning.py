"""DVC versioning of data stages, and the git commit every run records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from gandefect.config import Config
from gandefect.errors import ToolError
from gandefect.names import INGEST_STAGE

UNVERSIONED = "unversioned"


def _env() -> dict:
    env = dict(os.environ)
    # Stage commands in dvc.yaml call `gandefect`: make this interpreter's scripts win.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ToolError(f"{args[0]} is not installed: {exc}") from exc
    if check and proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()
        raise ToolError(f"`{' '.join(args[2:] if args[0] == sys.executable else args)}` failed in {cwd}:\n{out}")
    return proc


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # DVC gives up on its repository lock after about 3 s; a scheduled `watch` commits the fake
    # sets while a retrain run's DVC commit of thousands of files holds it for longer
    return _run([sys.executable, "-m", "dvc", "--wait-for-lock", *args], root, check=check)


def git_commit(root: Path) -> str:
    """HEAD's hash, suffixed `-dirty` when tracked files differ from it; `unknown` outside git."""
    head = _run(["git", "rev-parse", "HEAD"], root, check=False)
    if head.returncode != 0:
        return "unknown"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], root, check=False).stdout.strip()
    return head.stdout.strip() + ("-dirty" if dirty else "")


def init_project(root: Path) -> None:
    """Make `root` a git + DVC repository if it is not one yet (used for new projects and tests)."""
    if not (root / ".git").exists():
        _run(["git", "init", "-q"], root)
    if not (root / ".dvc").exists():
        dvc(root, "init", "-q")


def is_dvc_repo(root: Path) -> bool:
    return (root / ".dvc").is_dir()


def remote_url(cfg: Config) -> str:
    url = cfg.versioning.remote_url
    if "://" in url:
        return url
    return str(cfg.path(url).resolve())


def configure_remote(cfg: Config) -> str:
    """Point the project's default DVC remote at the configured URL (local config, not committed)."""
    url = remote_url(cfg)
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
    name = cfg.versioning.remote_name
    dvc(cfg.root, "remote", "add", "--local", "--force", "--default", name, url)
    return url


def _require_repo(cfg: Config) -> None:
    if not is_dvc_repo(cfg.root):
        raise ToolError(f"{cfg.root} is not a DVC repository: run `git init && dvc init` there first")


def commit_stage(cfg: Config, stage: str) -> None:
    """Record the stage's current outputs (content hashes) in dvc.lock and the DVC cache."""
    _require_repo(cfg)
    dvc(cfg.root, "commit", "--force", "--quiet", stage)


def push_stage(cfg: Config, stage: str) -> None:
    configure_remote(cfg)
    dvc(cfg.root, "push", "--quiet", "--remote", cfg.versioning.remote_name, stage)


def stage_out_hash(root: Path, stage: str, out_path: str) -> str | None:
    """The DVC hash dvc.lock records for one output of a stage (the data version)."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for out in stages.get(stage, {}).get("outs", []):
        if Path(out["path"]) == Path(out_path):
            return out.get("md5")
    return None


def version_stage(cfg: Config, stage: str, out_path: str) -> str:
    """Commit a stage's outputs, push them to the remote; returns the data version dvc.lock records."""
    commit_stage(cfg, stage)
    push_stage(cfg, stage)
    return stage_out_hash(cfg.root, stage, out_path) or UNVERSIONED


def data_version(cfg: Config) -> str:
    """The version of the real images every model was trained on: the ingest stage's hash."""
    return stage_out_hash(cfg.root, INGEST_STAGE, cfg.data.real_dir) or UNVERSIONED


@dataclass
class StageStatus:
    version: str | None
    workspace_matches: bool
    remote_has_it: bool | None  # None when the remote could not be asked


def stage_status(cfg: Config, stage: str, out_path: str) -> StageStatus:
    _require_repo(cfg)
    version = stage_out_hash(cfg.root, stage, out_path)
    if version is None:
        return StageStatus(None, False, None)
    local = dvc(cfg.root, "status", "--json", stage, check=False)
    workspace_matches = local.returncode == 0 and json.loads(local.stdout or "{}") == {}
    configure_remote(cfg)
    cloud = dvc(cfg.root, "status", "--cloud", "--json", "--remote", cfg.versioning.remote_name, stage, check=False)
    remote = None
    if cloud.returncode == 0:
        remote = json.loads(cloud.stdout or "{}") == {}
    return StageStatus(version, workspace_matches, remote)
