"""The `retrain` Prefect flow: the rows of the stage table in order, under the project lock and
one parent MLflow run, then the run's report."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.entities import Metric
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext

from gandefect.config import load_config
from gandefect.lifecycle import tracking
from gandefect.lifecycle.lock import project_lock
from gandefect.names import RETRAIN_EXPERIMENT
from gandefect.orchestrate.runners import shared_api_url, worker_threads
from gandefect.orchestrate.table import STAGE_TABLE, STAGES, FlowRun, run_stage
from gandefect.orchestrate.tasks import (
    CACHE_DIR,
    flow_run_id,
    results_storage,
    store_identity,
)
from gandefect.report import RetrainResult, write_retrain_reports


@flow(name="retrain", log_prints=True)
def retrain(
    params: str = "params.yaml",
    profile: str | None = None,
    stages: list[str] | None = None,
    force: bool = False,
    wait: bool = False,
    sources: list[str] | None = None,
    replace: bool = False,
) -> RetrainResult:
    """The rows of STAGE_TABLE in order: ingest -> data gate -> GAN zoo (concurrent) -> fakes +
    spliced -> detectors -> model gate -> promote -> repairer -> its gate -> the bento of the
    champions. `stages` limits the run (ingest always runs); `force` retrains every stage even
    when its inputs are unchanged. The whole run holds the project lock
    (gandefect.lifecycle.lock): a run started meanwhile stops with a message naming this one, or
    with `wait` queues behind it. `sources`: what ingest reads (else `data.source`, else the
    snapshot's own sources; see `stages.ingest.sources_to_ingest`); `replace` starts the snapshot over."""
    logger = get_run_logger()
    cfg = load_config(Path(params), profile)
    wanted = stages or STAGES
    tracking.setup(cfg)
    cache_dir = cfg.path(CACHE_DIR).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (
        project_lock(cfg.path("."), "run", wait, on_wait=logger.info),
        shared_api_url(),
        tracking.start_run(cfg, RETRAIN_EXPERIMENT, "retrain", "pending", flow_run_id()) as parent,
    ):
        mlflow.log_params({"stages": ",".join(wanted), "force": force})
        run = FlowRun(
            cfg,
            store_identity(cfg),
            force,
            parent.info.run_id,
            worker_threads(FlowRunContext.get().task_runner),
            cache_dir,
            results_storage(cfg),
            sources,
            replace,
        )
        for stage in STAGE_TABLE:
            if stage.name == "ingest" or stage.name in wanted:
                run_stage(run, stage, logger)
        # each timestamped at its stage's end: with its seconds, the stage's wall-clock window
        mlflow.MlflowClient().log_batch(
            parent.info.run_id,
            metrics=[Metric(f"seconds_{k}", v, int(run.ended[k] * 1000), 0) for k, v in run.seconds.items()],
        )
        mlflow.set_tags({"state": run.state, "cached": ",".join(run.cached) or "none"})
        r = run.results
        result = RetrainResult(
            run.data_version,
            r.get("gans", {}),
            r.get("detectors"),
            r.get("repairer"),
            r.get("bento"),
            run.seconds,
            run.state,
            run.cached,
        )
        result.reports = write_retrain_reports(cfg, result, flow_run_id())
        tracking.log_artifacts(result.reports, "report")
        create_markdown_artifact(
            result.reports[0].read_text(), key="retrain-summary", description=f"retrain {parent.info.run_id}"
        )
    for name, part in (("detector", result.detector), ("repairer", result.repairer)):
        if part is not None and part.gate.passed is False:
            logger.warning("%s failed gate: %s", name, "; ".join(part.gate.reasons))
    return result
