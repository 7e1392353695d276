"""The project lock: one writer at a time, a clear refusal naming the holder, nothing left behind by a killed holder."""

import os
import signal
import subprocess
import sys
import time

import pytest

from gandefect.lifecycle.lock import LOCK_FILE, ProjectBusyError, holder, project_lock
from tests.conftest import run_cli

HOLD = """
import sys, time
from gandefect.lifecycle.lock import project_lock
with project_lock(sys.argv[1], "run"):
    print("held", flush=True)
    time.sleep(60)
"""


def _hold(root):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_the_holders_name_and_gets_it_once_the_holder_is_killed(tmp_path):
    proc = _hold(tmp_path)
    try:
        with (
            pytest.raises(ProjectBusyError, match=rf"`gandefect run` \(pid {proc.pid}, started .*--wait"),
            project_lock(tmp_path, "promote"),
        ):
            pass
        assert holder(tmp_path)["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with project_lock(tmp_path, "promote"):  # the kernel dropped a killed holder's lock
        assert holder(tmp_path)["command"] == "promote"
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_a_waiting_writer_runs_after_the_holder_and_the_lock_is_reentrant(tmp_path):
    proc = _hold(tmp_path)
    messages = []
    killer = subprocess.Popen(
        [sys.executable, "-c", f"import os, signal, time; time.sleep(1.5); os.kill({proc.pid}, signal.SIGTERM)"]
    )
    started = time.monotonic()
    with project_lock(tmp_path, "run", wait=True, poll_seconds=0.2, on_wait=messages.append):
        waited = time.monotonic() - started
        with project_lock(tmp_path, "ingest"):  # the same process may ask again
            assert holder(tmp_path)["pid"] == os.getpid()
    killer.wait()
    proc.wait()
    assert waited >= 1.0 and len(messages) == 1 and "`gandefect run`" in messages[0]


def test_the_cli_refuses_a_writer_while_the_project_is_busy(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: default\n")
    proc = _hold(tmp_path)
    try:
        done = run_cli(tmp_path, "--params", str(tmp_path / "params.yaml"), "rollback")
    finally:
        proc.kill()
        proc.wait()
    assert done.returncode == 6, done.stdout + done.stderr
    assert "holds .gandefect/lock" in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr
