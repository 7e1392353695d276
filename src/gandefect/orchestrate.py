"""The `retrain` Prefect flow: every stage of gandefect as a task, in order, with the GAN zoo
submitted concurrently through the flow's task runner (threads, or Dask via prefect-dask).

Tasks call the stage functions of gandefect.stages (no second implementation). One parent
MLflow run in `gandefect-retrain` per flow run; every stage run carries the same
`flow_run_id` tag. `flows/retrain.py` is the entry point Prefect deployments name.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

# The ephemeral Prefect server starts slowly on small machines; give it time (overridable).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from gandefect.config import Config, load_config  # noqa: E402


def _flow_run_id() -> str | None:
    return str(flow_run.id) if flow_run.id else None


@task(name="ingest", retries=1, retry_delay_seconds=5)
def ingest_task(cfg: Config) -> str:
    """Ingest + DVC version + the data gate (a failing suite raises and stops the flow)."""
    from gandefect.stages.ingest import run_ingest

    return run_ingest(cfg, flow_run_id=_flow_run_id()).data_version


@task(name="feature-net")
def feature_net_task(cfg: Config, data_version: str) -> float:
    from gandefect.data.datasets import load_split
    from gandefect.stages.gans import ensure_feature_net

    train, test = load_split(cfg.real_dir, "train"), load_split(cfg.real_dir, "test")
    return ensure_feature_net(cfg, train, test, data_version)[1]


@task(name="train-gan", retries=1, retry_delay_seconds=5)
def train_gan_task(cfg: Config, loss: str) -> dict:
    """One GAN of the zoo (a retry resumes from its checkpoint)."""
    from gandefect.stages.gans import run_train_gans

    summary = run_train_gans(cfg, [loss], resume=True, flow_run_id=_flow_run_id())
    return summary.table.iloc[0].to_dict()


@task(name="detectors")
def detectors_task(cfg: Config):
    from gandefect.stages.detectors import run_train_detectors

    s = run_train_detectors(cfg, flow_run_id=_flow_run_id())
    return {"winner": s.winner, "version": s.detector_version, "judge": s.judge_version,
            "metrics": s.results[s.winner].metrics, "gate_passed": s.gate.passed if s.gate else None,
            "gate_reasons": s.gate.reasons if s.gate else [], "aliases": s.gate.aliases if s.gate else {},
            "fakes_version": s.fakes_version, "spliced_version": s.spliced_version}


@task(name="repairer")
def repairer_task(cfg: Config) -> dict:
    from gandefect.stages.repair import run_train_repairer

    s = run_train_repairer(cfg, flow_run_id=_flow_run_id())
    return {"version": s.version, "metrics": s.evaluation.metrics if s.evaluation else {}}


@dataclass
class RetrainResult:
    data_version: str
    zoo: dict[str, dict]
    detector: dict
    repairer: dict | None
    seconds: dict[str, float] = field(default_factory=dict)
    state: str = "completed"  # completed | failed gate


def task_runner_for(spec: str | None):
    """`threads` (default), `dask` (a real LocalCluster) or `dask=ADDRESS` (an existing scheduler)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    if not spec or spec == "threads":
        return ThreadPoolTaskRunner(max_workers=2)
    if spec == "dask" or spec.startswith("dask="):
        from prefect_dask import DaskTaskRunner

        address = spec.partition("=")[2]
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True})
    from gandefect.errors import BadInputError

    raise BadInputError(f"--task-runner must be threads, dask or dask=ADDRESS, got {spec!r}")


@flow(name="retrain", log_prints=True)
def retrain(params: str = "params.yaml", profile: str | None = None, stages: list[str] | None = None) -> RetrainResult:
    """ingest -> data gate -> GAN zoo (concurrent) -> fakes + spliced -> detectors -> model gate
    -> promote -> repairer. `stages` limits the run to a prefix of them (`ingest`, `gans`, ...)."""
    import mlflow

    from gandefect.lifecycle import tracking

    logger = get_run_logger()
    cfg = load_config(Path(params), profile)
    wanted = stages or ["ingest", "gans", "detectors", "repairer"]
    seconds: dict[str, float] = {}
    tracking.setup(cfg)
    with tracking.start_run(cfg, tracking.RETRAIN_EXPERIMENT, "retrain", "pending", _flow_run_id()) as parent:
        t = time.perf_counter()
        version = ingest_task(cfg)
        seconds["ingest"] = time.perf_counter() - t
        mlflow.set_tag("data_version", version)
        logger.info("data version %s", version)
        zoo: dict[str, dict] = {}
        if "gans" in wanted:
            t = time.perf_counter()
            feature_net_task(cfg, version)
            futures = {loss: train_gan_task.submit(cfg, loss) for loss in cfg.gan.losses}
            zoo = {loss: f.result() for loss, f in futures.items()}
            seconds["gans"] = time.perf_counter() - t
        detector, repairer, state = {}, None, "completed"
        if "detectors" in wanted:
            t = time.perf_counter()
            detector = detectors_task(cfg)
            seconds["detectors"] = time.perf_counter() - t
            if detector["gate_passed"] is False:
                state = "failed gate"
        if "repairer" in wanted and state == "completed":
            t = time.perf_counter()
            repairer = repairer_task(cfg)
            seconds["repairer"] = time.perf_counter() - t
        mlflow.log_metrics({f"seconds_{k}": v for k, v in seconds.items()})
        mlflow.set_tag("state", state)
        result = RetrainResult(version, zoo, detector, repairer, seconds, state)
        summary = summary_markdown(result)
        path = cfg.report_dir / f"retrain-{time.strftime('%Y-%m-%d')}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(summary)
        tracking.log_artifacts([path], "report")
        create_markdown_artifact(summary, key="retrain-summary", description=f"retrain {parent.info.run_id}")
    if state != "completed":
        logger.warning("failed gate: %s", "; ".join(detector.get("gate_reasons", [])))
    return result


def summary_markdown(r: RetrainResult) -> str:
    lines = [f"# retrain: {r.state}", "", f"Data version `{r.data_version}`.", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in r.seconds.items()]
    if r.zoo:
        lines += ["", "## GAN zoo", "", "| loss | fid | fid_ratio | entropy ratio | meets targets |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v.get('fid', float('nan')):.1f} | {v.get('fid_ratio', float('nan')):.3f} | "
                  f"{v.get('class_entropy_ratio', float('nan')):.3f} | {v.get('meets_targets', '')} |" for k, v in r.zoo.items()]
    if r.detector:
        d = r.detector
        lines += ["", f"## Detector v{d['version']} ({d['winner']})", "",
                  f"Gate: {'passed' if d['gate_passed'] else 'FAILED'}; aliases: {d['aliases'] or 'untouched'}."]
        lines += [f"- {reason}" for reason in d["gate_reasons"]]
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {d['metrics'][k]:.4f} |" for k in ("auc_seen", "auc_unseen_min", "auc_jpeg75", "ece",
                                                                  "pixel_ap", "iou") if k in d["metrics"]]
    if r.repairer:
        m = r.repairer["metrics"]
        lines += ["", f"## Repairer v{r.repairer['version']}", "",
                  f"psnr_mask {m.get('psnr_mask', float('nan')):.2f} dB (mean fill {m.get('psnr_mask_mean_fill', float('nan')):.2f}, "
                  f"biharmonic {m.get('psnr_mask_biharmonic', float('nan')):.2f}); outside_mask_change "
                  f"{m.get('outside_mask_change', float('nan')):.0f}; worst fid ratio {m.get('fid_ratio_max', float('nan')):.3f}"]
    return "\n".join(lines) + "\n"


DEPLOYMENT_NAME = "weekly"


def register_schedule(params: str, profile: str | None, cron: str, name: str = DEPLOYMENT_NAME) -> str:
    """Create (or update) the deployment `retrain/<name>` with a cron schedule; returns its id.

    Needs a Prefect server that outlives this process (PREFECT_API_URL); the runs it schedules
    are executed by `gandefect schedule` (which serves the deployment) or by a worker."""
    check_cron(cron)
    deployment = retrain.to_deployment(name=name, cron=cron, parameters={"params": params, "profile": profile})
    return str(deployment.apply())


def check_cron(cron: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    from gandefect.errors import BadInputError

    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise BadInputError(f"--cron {cron!r} is not a valid cron expression (e.g. \"0 3 * * 0\")") from None


def serve_schedule(params: str, profile: str | None, cron: str, name: str = DEPLOYMENT_NAME) -> None:
    """Serve the deployment: a long-running process that runs the flow on its schedule."""
    check_cron(cron)
    retrain.serve(name=name, cron=cron, parameters={"params": params, "profile": profile})
