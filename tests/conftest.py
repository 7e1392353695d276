"""Shared fixtures: temporary projects (real git + DVC repos, SQLite MLflow) and image folders."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import settings
from PIL import Image

from gandefect.config import load_config

REPO = Path(__file__).resolve().parents[1]

# Property-based tests: in CI the same examples every run (derandomized: a red run is the code's, not
# the draw's); HYPOTHESIS_PROFILE=explore draws new ones, ten times as many, to look for crashes.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)  # with tests.folder_shapes.examples: ten times as many
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The CUDA tests run where torch sees a GPU (the lent GPU machine); elsewhere they are not
# collected at all, since a skipped test fails the run here (CI has no GPU).
collect_ignore = [] if torch.cuda.is_available() else ["test_cuda.py"]


def write_params(root: Path, profile: str = "tiny", **sections) -> Path:
    """Copy the project's params.yaml into root with `profile` active and sections (or top-level
    settings) overridden."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = profile
    for section, values in sections.items():
        params[section] = {**params.get(section, {}), **values} if isinstance(values, dict) else values
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
    shutil.copytree(
        REPO / "src" / "gandefect" / "data",
        root / "src" / "gandefect" / "data",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=root, check=True, env=env)
    return root


def copy_project(src: Path, dst: Path) -> Path:
    """A self-contained copy of a trained project at `dst`, for a test that changes it.

    MLflow keeps absolute paths in its SQLite store (tracking.experiment_id resolves
    `tracking.artifact_root` when it creates an experiment: experiments, runs, logged models and
    model versions all name files under the original) and in each logged model's MLmodel, and
    `dvc remote add --local` writes the remote's absolute path. All are rewritten to point into the
    copy, so what a test does there (new runs, models, pushes) lands in the copy and the original
    is never touched.

    Not carried over: the retrain flow's cache. Its keys name the MLflow store's absolute path
    (orchestrate.store_identity), so `gandefect run` in a copy trains every stage again; a test
    that reruns the flow on a trained project borrows the original instead (`borrowed`)."""
    src, dst = src.resolve(), dst.resolve()
    shutil.copytree(src, dst, symlinks=True)
    old, new = f"{src}/", f"{dst}/"
    with contextlib.closing(sqlite3.connect(dst / "mlflow.db")) as db:
        columns = [
            (table, column[1])
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            for column in db.execute(f'PRAGMA table_info("{table}")')
            if any(t in column[2].upper() for t in ("CHAR", "TEXT", "CLOB"))
        ]
        for table, column in columns:
            db.execute(
                f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE instr("{column}", ?) > 0',
                (old, new, old),
            )
        db.commit()
        left = [
            (t, c)
            for t, c in columns
            if db.execute(f'SELECT count(*) FROM "{t}" WHERE instr("{c}", ?) > 0', (str(src),)).fetchone()[0]
        ]
    assert not left, f"the copy's MLflow store still names {src} in {left}"
    # ... and in the MLmodel file of each logged model (its artifact_path) and DVC's local config
    for path in [*(dst / "mlartifacts").rglob("MLmodel"), dst / ".dvc" / "config.local"]:
        if path.is_file():
            path.write_text(path.read_text().replace(str(src), str(dst)))
    return dst


@contextlib.contextmanager
def borrowed(root: Path):
    """The trained project itself, for a test that must change it where it is (the retrain flow's
    cache keys name the store's absolute path, so only there does a rerun come from the cache);
    put back exactly as it was afterwards, whatever the test did."""
    backup = root.with_name(root.name + ".borrowed")
    shutil.copytree(root, backup, symlinks=True)
    try:
        yield root
    finally:
        shutil.rmtree(root)
        backup.rename(root)


@pytest.fixture
def tiny_cfg(project: Path):
    return load_config(project / "params.yaml")


@contextlib.contextmanager
def chromium_page(**options):
    """A page of Debian's headless Chromium (driven by Playwright), closed afterwards."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed: ./scripts/test.sh installs it (apt-get install chromium)"
    from playwright.sync_api import sync_playwright  # lazy: only the browser tests need it

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            yield browser.new_page(**options)
        finally:
            browser.close()


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
    """Run the real `gandefect` command in a project folder: a process of its own (pid, working
    folder, environment, stdio, exit code) running gandefect.cli.main(), forked from an interpreter
    that has imported the CLI once (see _CliForks); GANDEFECT_TEST_CLI=subprocess starts a fresh
    interpreter for every call instead."""
    if os.environ.get("GANDEFECT_TEST_CLI") == "subprocess":
        proc = subprocess.run(
            [sys.executable, "-m", "gandefect.cli", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    else:
        proc = _CliForks.run(root, list(args), timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


class _CliForks:
    """Importing what the commands run (torch, MLflow, scikit-learn, ...) takes about 5 s of CPU, more than
    most commands the tests run; the integration tests run some fifty. One interpreter imports it
    (and Great Expectations, which the data gate imports on first use: 2.5 s more per command that
    validates) once and forks a child per call, which sets the call's working folder, environment and stdio and
    runs cli.main() to its exit code: a process of its own, as `gandefect` is, minus the imports.
    The interpreter is restarted when gandefect's source changes (files edited during a session)."""

    _server: subprocess.Popen | None = None
    _stamp: float = 0.0
    _started: typing.ClassVar[set[int]] = set()

    @staticmethod
    def _source_stamp() -> float:
        files = [*(REPO / "src" / "gandefect").rglob("*.py"), *(REPO / "serving").rglob("*.py")]
        return max((p.stat().st_mtime for p in files), default=0.0)

    @classmethod
    def _ask(cls, request: dict) -> dict:
        stamp = cls._source_stamp()
        if cls._server is not None and (cls._server.poll() is not None or (stamp != cls._stamp and not cls._started)):
            cls.close()
        if cls._server is None:
            cls._server = subprocess.Popen(
                [sys.executable, "-m", "tests.fork_server"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            cls._stamp = stamp
            ready = cls._server.stdout.readline().strip()
            assert ready == "ready", f"the CLI fork server did not start: {ready!r}"
        cls._server.stdin.write(json.dumps(request) + "\n")
        cls._server.stdin.flush()
        answer = cls._server.stdout.readline()
        assert answer, "the CLI fork server exited"
        return json.loads(answer)

    @classmethod
    def run(cls, root: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="gandefect-cli-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            status = cls._ask(
                {
                    "op": "run",
                    "args": args,
                    "cwd": str(root),
                    "env": dict(os.environ),
                    "out": str(out),
                    "err": str(err),
                    "timeout": timeout,
                }
            )["status"]
            stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        command = [sys.executable, "-m", "gandefect.cli", *args]
        if status is None:
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, status, stdout, stderr)

    @classmethod
    def start(cls, root: Path, args: list[str], env: dict, log: Path) -> ForkedCommand:
        pid = cls._ask({"op": "start", "args": args, "cwd": str(root), "env": env, "out": str(log), "err": None})["pid"]
        cls._started.add(pid)
        return ForkedCommand(pid, args)

    @classmethod
    def status(cls, pid: int, timeout: float) -> int | None:
        code = cls._ask({"op": "wait", "pid": pid, "timeout": timeout})["status"]
        if code is not None:
            cls._started.discard(pid)
        return code

    @classmethod
    def close(cls) -> None:
        if cls._server is not None:
            cls._server.stdin.close()
            cls._server.wait(30)
            cls._server = None
            cls._started.clear()


class ForkedCommand:
    """A `gandefect` command running in the background (start_cli): the parts of Popen tests use.
    It leads its own process group (os.killpg(command.pid, ...) stops it and its children)."""

    def __init__(self, pid: int, args: list[str]):
        self.pid, self.args, self.returncode = pid, args, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = _CliForks.status(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = _CliForks.status(self.pid, 10**9 if timeout is None else timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode


def start_cli(root: Path, *args: str, env: dict, log: Path) -> ForkedCommand:
    """Start the real `gandefect` command in the background (stdout and stderr to `log`), as
    Popen(..., start_new_session=True) would; GANDEFECT_TEST_CLI=subprocess: with Popen itself."""
    if os.environ.get("GANDEFECT_TEST_CLI") == "subprocess":
        return subprocess.Popen(
            [sys.executable, "-m", "gandefect.cli", *args],
            cwd=root,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return _CliForks.start(root, list(args), env, log)


# -- the session ---------------------------------------------------------------------------------
_ENV = {}


def pytest_configure(config):
    # One BentoML store for the session, never ~/bentoml. BentoML reads BENTOML_HOME once, when
    # this process first imports it, and `bentoml` subprocesses read it from the environment:
    # set here, before any test imports it, both agree (a test may still give a subprocess another).
    home = tempfile.mkdtemp(prefix="gandefect-bentoml-")
    _ENV.update({k: os.environ.get(k) for k in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK")}, _home=home)
    os.environ.update(BENTOML_HOME=home, BENTOML_DO_NOT_TRACK="true")


def pytest_unconfigure(config):
    _CliForks.close()
    imported = sys.modules.get("tests.conftest")  # tests import run_cli from there: maybe another copy of this file
    if imported is not None and getattr(imported, "_CliForks", _CliForks) is not _CliForks:
        imported._CliForks.close()
    home = _ENV.pop("_home", None)
    for key, value in _ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if home:
        shutil.rmtree(home, ignore_errors=True)


SKIP_IS_FAILURE = (
    "skipped tests fail the run: CI must never pass without running every test. "
    "Install what the test needs (the web-page test: `apt-get install chromium`, as .ci/run does) "
    "or delete the test"
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Any skip (pytest.skip, a skip or skipif mark, importorskip) is reported as a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} was skipped ({reason}); {SKIP_IS_FAILURE}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """... and so is a module that skips itself while being collected."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{collector.nodeid} was skipped ({reason}); {SKIP_IS_FAILURE}"


_BROWSER: dict[str, str] = {}  # nodeid -> outcome of each `browser` test that ran


def pytest_runtest_logreport(report):
    if "browser" not in report.keywords:
        return
    if report.failed:
        _BROWSER[report.nodeid] = "FAILED" if report.when == "call" else f"ERROR (in {report.when})"
    elif report.when == "call" and report.passed:
        _BROWSER.setdefault(report.nodeid, "passed")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Name the web-page test's outcome, so CI's log shows the browser really ran."""
    deselected = [i.nodeid for i in terminalreporter.stats.get("deselected", []) if i.get_closest_marker("browser")]
    lines = [f"web page test (headless chromium): {outcome} ({nodeid})" for nodeid, outcome in _BROWSER.items()]
    lines += [f"web page test (headless chromium): not run, deselected ({nodeid})" for nodeid in deselected]
    for line in lines or ["web page test (headless chromium): not run (not in this selection)"]:
        terminalreporter.write_line(
            line,
            bold=True,
            green=line.split(": ", 1)[1].startswith("passed"),
            red=not line.split(": ", 1)[1].startswith(("passed", "not run")),
        )
