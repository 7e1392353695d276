"""Shared fixtures: temporary projects (real git + DVC repos, SQLite MLflow) and image folders."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from gandefect.config import load_config

REPO = Path(__file__).resolve().parents[1]


def write_params(root: Path, profile: str = "tiny", **sections) -> Path:
    """Copy the project's params.yaml into root with `profile` active and sections overridden."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = profile
    for section, values in sections.items():
        params[section] = {**params.get(section, {}), **values}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh project folder: git + DVC repo with the real dvc.yaml, tiny profile."""
    return make_project(tmp_path / "project")


def make_project(root: Path, **sections) -> Path:
    """A git + DVC repo at `root` with the real dvc.yaml, tiny profile, params sections overridden."""
    root.mkdir()
    write_params(root, **sections)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    # The ingest stage depends on the data code; give the temp repo the same files.
    shutil.copytree(REPO / "src" / "gandefect" / "data", root / "src" / "gandefect" / "data",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=root, check=True, env=env)
    return root


@pytest.fixture
def tiny_cfg(project: Path):
    return load_config(project / "params.yaml")


def random_image(rng: np.random.Generator, size: tuple[int, int], mode: str) -> Image.Image:
    channels = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode)


def make_image_folder(folder: Path, n_good: int, n_corrupt: int = 0, seed: int = 0, prefix: str = "img") -> Path:
    """n_good random images of mixed size, mode and format, plus n_corrupt broken files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = [("L", "png"), ("RGB", "jpg"), ("RGBA", "png"), ("RGB", "bmp"), ("LA", "png"), ("RGB", "webp")]
    for i in range(n_good):
        mode, ext = kinds[i % len(kinds)]
        size = (int(rng.integers(16, 90)), int(rng.integers(16, 90)))
        im = random_image(rng, size, mode)
        sub = folder / ("nested" if i % 5 == 0 else "")
        sub.mkdir(exist_ok=True)
        im.save(sub / f"{prefix}{i:03d}.{ext}")
    for i in range(n_corrupt):
        path = folder / f"broken{i}"
        if i % 3 == 0:  # a PNG cut in half
            buf = io.BytesIO()
            random_image(rng, (40, 40), "RGB").save(buf, "PNG")
            path.with_suffix(".png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        elif i % 3 == 1:  # text pretending to be a JPEG
            path.with_suffix(".jpg").write_text("this is not an image")
        else:  # random bytes
            path.with_suffix(".gif").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    return folder


def run_cli(root: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `gandefect` command in a project folder."""
    proc = subprocess.run([sys.executable, "-m", "gandefect.cli", *args], cwd=root,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc
