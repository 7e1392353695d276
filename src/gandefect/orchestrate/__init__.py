"""The Prefect flows. `retrain` (retrain_flow.py) runs the rows of `STAGE_TABLE` (table.py) in
order, each stage a task (tasks.py), with the GAN zoo submitted concurrently through the flow's
task runner (runners.py: processes, threads, or Dask); `watch` and the cron deployments live in
keep_up.py. Each row names the stage, what it reads, its cache key and the typed result it
returns (`gandefect.flow_results`); docs/architecture.md ("A flow stage") says how to add one.

Tasks call the stage functions of gandefect.stages (no second implementation). One parent
MLflow run in `gandefect-retrain` per flow run; every stage run carries the same
`flow_run_id` tag. `flows/retrain.py` is the entry point Prefect deployments name.

Incremental runs: every training task is cached by Prefect under a key made of exactly what
determines its output (data version, its params section, the seed, the upstream models and
the identity of the MLflow store), its record under `.gandefect/cache/` and its result under
`.gandefect/results/` (inside the project, so PREFECT_HOME never decides what is reused). A
rerun with unchanged data and params therefore trains and registers nothing; `force=True`
(`gandefect run --force`) refreshes every cache entry.
"""

from __future__ import annotations

import os

# The ephemeral Prefect server starts slowly on small machines; give it time (overridable). Set
# before Prefect is first imported, which the modules below do.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from gandefect.orchestrate.keep_up import (
    DEPLOYMENT_NAME,
    check_cron,
    register_schedule,
    serve_schedule,
    watch,
)
from gandefect.orchestrate.retrain_flow import retrain
from gandefect.orchestrate.runners import task_runner_for
from gandefect.orchestrate.table import STAGE_TABLE, STAGES, FlowRun, Stage, run_stage
from gandefect.orchestrate.tasks import CACHE_DIR, RESULTS_DIR, digest, store_identity

__all__ = [
    "CACHE_DIR",
    "DEPLOYMENT_NAME",
    "RESULTS_DIR",
    "STAGES",
    "STAGE_TABLE",
    "FlowRun",
    "Stage",
    "check_cron",
    "digest",
    "register_schedule",
    "retrain",
    "run_stage",
    "serve_schedule",
    "store_identity",
    "task_runner_for",
    "watch",
]
