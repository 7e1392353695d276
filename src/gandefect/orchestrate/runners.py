"""Where the flow's tasks run: the task runner for `gandefect run --task-runner`, and each GAN
worker's share of the cores."""

from __future__ import annotations

import contextlib
import os

from prefect.client.orchestration import get_client
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from gandefect.errors import BadInputError

# Two GANs side by side on one torch thread each train 1.3-1.5x the images per second of one
# GAN on two threads (bench/train_throughput.py --side-by-side, 2 cores; a small model's ops
# are too short for two threads to split well), so the default runner gives every GAN worker
# process this many cores (two workers on a 2-core machine, eight on an 8-core one) and the
# zoo is submitted longest first, so the longest GAN never starts last.
THREADS_PER_GAN = 1


def task_runner_for(spec: str | None):
    """`processes` (the default: one worker process per THREADS_PER_GAN cores), `processes=N`
    (N workers sharing the cores; 1 trains the GANs one at a time), `threads`, `dask` (a real
    LocalCluster) or `dask=ADDRESS` (an existing scheduler).

    Processes, even a single one on a 2-core machine: torch ops in a pool thread of the flow
    process ran about 25 % slower than in a process of their own (measured), and a GAN
    task's threads slower still while the flow's own thread was busy."""
    workers = max(1, (os.cpu_count() or 1) // THREADS_PER_GAN)
    if not spec or spec == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    if spec.startswith("processes="):
        count = spec.partition("=")[2]
        if not count.isdigit() or int(count) < 1:
            raise BadInputError(f"--task-runner processes=N needs a whole number of workers >= 1, got {count!r}")
        return ProcessPoolTaskRunner(max_workers=int(count))
    if spec == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if spec == "dask" or spec.startswith("dask="):
        from prefect_dask import DaskTaskRunner  # lazy: Dask is imported only when asked for

        address = spec.partition("=")[2]
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": max(2, workers), "threads_per_worker": 1, "processes": True},
        )
    raise BadInputError(f"--task-runner must be processes, processes=N, threads, dask or dask=ADDRESS, got {spec!r}")


def worker_threads(runner) -> int | None:
    """Torch threads per concurrent GAN: the cores shared among the runner's local workers."""
    cores = os.cpu_count() or 1
    if isinstance(runner, ProcessPoolTaskRunner):
        return max(1, cores // (runner._max_workers or 1))
    if type(runner).__name__ == "DaskTaskRunner":
        return 1 if not getattr(runner, "address", None) else None  # a remote cluster sizes itself
    return None


@contextlib.contextmanager
def shared_api_url():
    """Worker processes must report to this flow's Prefect server. With the ephemeral server
    (no PREFECT_API_URL) each spawned worker would otherwise start a server of its own."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    with get_client(sync_client=True) as client:
        os.environ["PREFECT_API_URL"] = str(client.api_url)
    try:
        yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)
