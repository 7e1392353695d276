"""Keeping up: the `watch` flow (the champion on the current data, and a retrain when it misses
a generator it never trained on) and the cron deployments `gandefect schedule` serves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, serve
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments import run_deployment
from prefect.states import Failed

from gandefect.config import load_config
from gandefect.errors import BadInputError
from gandefect.lifecycle import champion_record, registry
from gandefect.names import DETECTOR_MODEL
from gandefect.orchestrate.retrain_flow import retrain
from gandefect.stages.detectors import run_watch

DEPLOYMENT_NAME = "weekly"


@flow(name="watch", log_prints=True)
def watch(params: str = "params.yaml", profile: str | None = None, retrain_deployment: str | None = None):
    """Re-evaluate the champion detector on the current data. A markdown artifact
    (`champion-watch`) holds its figure per generator; the run ends Failed (so a Prefect
    automation can notify) when the champion misses a generator: below the gate floor.

    `retrain_deployment` (as `gandefect schedule --watch-cron` serves it): when a generator the
    champion misses has samples it never trained on (a family `ingest-fakes` brought), a run of
    the retrain deployment `retrain/<name>` starts at once, and the watch run names it."""
    logger = get_run_logger()
    cfg = load_config(Path(params), profile)
    figures, alerts = run_watch(cfg)
    started = ""
    learn = champion_record.to_learn(figures, cfg.gates) if alerts and retrain_deployment else []
    refused = _refused_on_this_data(figures) if learn else None
    if refused is not None:  # the same data trains the same model: a person decides, or more samples come
        started = (
            f"candidate v{refused.version} already learned from this data (fakes {figures.fakes_version}) "
            f"and is not the champion (refused by its gate, or rolled back); none started: `gandefect promote "
            f"{refused.version}` is an operator's call, more samples a reason to retrain"
        )
    elif learn:
        deployment = f"retrain/{retrain_deployment}"
        under_way = _runs_under_way(deployment)
        if under_way:  # a watch every few minutes must not queue a retrain behind each other
            run = under_way[0]
            started = f"retrain flow run {run.name} ({run.id}) is already under way ({run.state_name}); none started"
        else:
            run = run_deployment(deployment, timeout=0, parameters={"params": params, "profile": profile})
            started = f"retrain flow run {run.name} ({run.id}) started to learn {', '.join(learn)}"
    table = champion_record.per_generator(figures.metrics, cfg.gates)
    lines = [
        f"# champion {figures.name} v{figures.version} on the current data",
        "",
        f"Data `{figures.data_version}`, fakes `{figures.fakes_version}`, {figures.when}.",
        "",
    ]
    lines += [f"- **ALERT** {a}" for a in alerts] + ([f"- {started}"] if started else []) + ([""] if alerts else [])
    create_markdown_artifact(
        "\n".join(lines) + table.to_markdown(index=False, floatfmt=".4f") + "\n",
        key="champion-watch",
        description=f"{figures.name} v{figures.version}",
    )
    for a in alerts:
        logger.warning(a)
    if started:
        logger.warning(started)
    if alerts:
        return Failed(
            message=f"the champion misses {len(alerts)} generator(s): "
            + "; ".join(alerts)
            + (f"; {started}" if started else "")
        )
    return {"version": figures.version, "alerts": alerts}


def _refused_on_this_data(figures: champion_record.ChampionFigures):
    """The newest detector version when it is newer than the champion and was trained on the
    data and fake sets the champion was just judged on (so the gate refused it), else None."""
    newest = registry.latest_version(DETECTOR_MODEL)
    if newest is None or int(newest.version) <= int(figures.version):
        return None
    same = (newest.tags.get("data_version"), newest.tags.get("fakes_version")) == (
        figures.data_version,
        figures.fakes_version,
    )
    return newest if same else None


STALE_RUN = timedelta(hours=12)  # a run due longer ago and still not ended lost its process (the server never heard)


def _runs_under_way(deployment: str) -> list:
    """The deployment's runs that are due, pending or running now (not its future scheduled ones,
    nor ones due more than STALE_RUN ago)."""
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        due = FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[dep.id]),
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING])
            ),
            expected_start_time=FlowRunFilterExpectedStartTime(
                before_=datetime.now(UTC), after_=datetime.now(UTC) - STALE_RUN
            ),
        )
        return client.read_flow_runs(flow_run_filter=due, limit=5)


def register_schedule(params: str, profile: str | None, cron: str, name: str = DEPLOYMENT_NAME) -> str:
    """Create (or update) the deployment `retrain/<name>` with a cron schedule; returns its id.

    Needs a Prefect server that outlives this process (PREFECT_API_URL); the runs it schedules
    are executed by `gandefect schedule` (which serves the deployment) or by a worker."""
    check_cron(cron)
    deployment = retrain.to_deployment(name=name, cron=cron, parameters={"params": params, "profile": profile})
    return str(deployment.apply())


def check_cron(cron: str) -> None:
    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise BadInputError(f'--cron {cron!r} is not a valid cron expression (e.g. "0 3 * * 0")') from None


def serve_schedule(
    params: str, profile: str | None, cron: str, name: str = DEPLOYMENT_NAME, watch_cron: str | None = None
) -> None:
    """Serve the deployment: a long-running process that runs the flow on its schedule (and,
    with `watch_cron`, the `watch` flow on its own, which starts a retrain at once when the
    champion misses a generator it has never trained on)."""
    check_cron(cron)
    parameters = {"params": params, "profile": profile}
    deployments = [retrain.to_deployment(name=name, cron=cron, parameters=parameters)]
    if watch_cron:
        check_cron(watch_cron)
        deployments.append(
            watch.to_deployment(name=name, cron=watch_cron, parameters={**parameters, "retrain_deployment": name})
        )
    serve(*deployments)
