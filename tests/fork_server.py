"""The interpreter behind tests.conftest's run_cli: it imports the CLI and what the commands import
once, then forks a child per command, which sets the call's working folder, environment and stdio
and runs cli.main() to its exit code (a process of its own, as `gandefect` is, minus the imports).

Requests come one JSON line at a time on stdin, answers go out the same way: "run" forks a command
and answers with its exit status; "start" forks one and answers with its pid at once, "poll" and
"wait" answer with a started command's status (null while it runs). Run as `python -m tests.fork_server`.
"""

import atexit
import importlib
import json
import os
import random
import sys
import threading
import time
import traceback

from gandefect import cli

# what the commands import when they run (seconds each; the CLI module itself imports none of it, so
# that --help answers at once), imported once here. Not Prefect: it reads its settings from the
# environment when imported, and each command has its own
PRELOAD = [
    "great_expectations",
    "mlflow",
    "gandefect.evaluate.drift",
    "gandefect.lifecycle.bento",
    "gandefect.lifecycle.served",
    "gandefect.lifecycle.champion_record",
    "gandefect.stages.apply",
    "gandefect.stages.detectors",
    "gandefect.stages.gans",
    "gandefect.stages.ingest",
    "gandefect.stages.localize",
    "gandefect.stages.repair",
]

WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def command(request):
    # in the child: what `python -m gandefect.cli ARGS` does after its imports
    code = 1
    try:
        os.setsid()  # a process group of its own, as `start_new_session` gives (killed whole on timeout)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["out"], WRITE, 0o644)
        err = os.open(request["err"], WRITE, 0o644) if request["err"] else out
        for fd, opened in ((0, stdin), (1, out), (2, err)):
            os.dup2(opened, fd)
        for opened in {stdin, out, err}:
            os.close(opened)
        random.seed()  # a fresh interpreter seeds these from the OS
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        sys.argv = [cli.__file__, *request["args"]]
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the child reports whatever ends the command, as the interpreter would
        traceback.print_exc()  # what the interpreter prints for an uncaught exception
    finally:  # the interpreter's own shutdown (CPython's hooks for it): wait for threads, run atexit, flush
        try:
            threading._shutdown()
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def fork(request):
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        command(request)
    return pid


def status(pid, timeout):
    deadline = time.monotonic() + timeout
    while True:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(code)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def main() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            answer = {"pid": fork(request)}
        elif request["op"] == "run":
            pid = fork(request)
            code = status(pid, request["timeout"])
            if code is None:
                os.killpg(pid, 9)
                os.waitpid(pid, 0)
            answer = {"status": code}
        else:  # poll, wait
            answer = {"status": status(request["pid"], request.get("timeout", 0))}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
