"""DVC as the lifecycle calls it: a command that finds DVC's repository lock held waits for it
(a scheduled `watch` versions the fake sets while a retrain run's DVC commit holds the lock)."""

import threading
import time

import zc.lockfile

from gandefect.lifecycle import versioning


def test_a_dvc_command_waits_for_the_repository_lock_another_process_holds(tmp_path):
    versioning.init_project(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    (tmp_path / ".dvc" / "tmp").mkdir(exist_ok=True)
    held = zc.lockfile.LockFile(str(tmp_path / ".dvc" / "tmp" / "lock"))  # as a running DVC command holds it
    released: list[float] = []

    def release() -> None:
        time.sleep(6)  # DVC alone gives up after about 3 s
        released.append(time.monotonic())
        held.close()

    holder = threading.Thread(target=release)
    holder.start()
    versioning.dvc(tmp_path, "add", "-q", "data")  # raises ToolError if DVC gave up on the lock
    finished = time.monotonic()
    holder.join()
    assert released and finished >= released[0]
    assert (tmp_path / "data.dvc").is_file()
