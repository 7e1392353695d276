"""One writer at a time: the project lock.

Every command that writes `data/`, the DVC lock, the MLflow registry or the aliases (the
`retrain` flow, scheduled or not, `ingest`, `ingest-fakes`, the training commands, `gate`,
`promote`, `rollback`) holds an exclusive `flock` on `.gandefect/lock` beside `params.yaml`.
A second one either waits for it (`wait=True`) or stops at once with a message naming the
holder (its command, process id and start time, written into the lock file). The kernel
drops the lock when its process dies, `kill -9` included, so a killed run never leaves the
project locked. Re-entrant within a process: a command that holds it may call code that
asks for it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from gandefect.errors import GandefectError

LOCK_FILE = Path(".gandefect") / "lock"
_held: dict[str, int] = {}  # lock path -> depth, for this process


class ProjectBusyError(GandefectError):
    """Another gandefect command holds the project lock."""

    exit_code = 6


def holder(root: Path) -> dict:
    """What the lock file says about its holder ({} when unreadable or never written)."""
    try:
        return json.loads((root / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe(info: dict) -> str:
    if not info:
        return "another gandefect command"
    return f"`gandefect {info.get('command', '?')}` (pid {info.get('pid', '?')}, started {info.get('started', '?')})"


@contextlib.contextmanager
def project_lock(
    root: Path | str,
    command: str,
    wait: bool = False,
    poll_seconds: float = 2.0,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the project lock of `root` (the folder of params.yaml) while the block runs."""
    path = (Path(root) / LOCK_FILE).resolve()
    key = str(path)
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                busy = describe(holder(Path(root)))
                if not wait:
                    raise ProjectBusyError(
                        f"{busy} is running in this project and holds {LOCK_FILE}: "
                        "wait for it to finish, or pass --wait to queue behind it"
                    ) from None
                if on_wait and not told:
                    on_wait(f"waiting for {busy} to finish ...")
                    told = True
                time.sleep(poll_seconds)
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps(
                {"command": command, "pid": os.getpid(), "started": datetime.now(UTC).isoformat(timespec="seconds")}
            ).encode(),
            0,
        )
        _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
