"""The flow commands: `run` (the whole lifecycle once, as the Prefect flow `retrain`) and
`schedule` (the same on a cron schedule)."""

from __future__ import annotations

from pathlib import Path

import typer

from gandefect.cli.common import GATE_FAILED_EXIT, app, flows, out, project_config, state
from gandefect.errors import BadInputError
from gandefect.lifecycle.lock import project_lock
from gandefect.names import BUILT_IN_SOURCES, FLOW_STAGES


@app.command("run")
def run_cmd(
    task_runner: str | None = typer.Option(
        None,
        "--task-runner",
        help="processes (one worker per core), processes=N, threads, dask (a LocalCluster) or dask=ADDRESS; default: processes.",
    ),
    stages: list[str] | None = typer.Option(
        None, "--stage", help=f"Run only these stages (ingest always runs): {', '.join(FLOW_STAGES[1:])}."
    ),
    force: bool = typer.Option(False, "--force", help="Retrain every stage even when its inputs are unchanged."),
    wait: bool = typer.Option(
        False,
        "--wait",
        help="If another gandefect command is running in this project, wait for it instead of stopping.",
    ),
    from_: list[str] | None = typer.Option(
        None,
        "--from",
        metavar="SOURCE",
        help=f"Ingest exactly this source (repeatable): a folder of images or a built-in ({', '.join(BUILT_IN_SOURCES)}). Default: data.source, else the snapshot's own sources.",
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Start the snapshot over from the named sources (the old one stays in DVC's history)."
    ),
) -> None:
    """Run the whole lifecycle once as the Prefect flow `retrain` (ephemeral Prefect server by default).

    Ingest reads exactly the sources named (--from) or configured (data.source); with neither, the
    snapshot's own sources, or data.default_source on an empty snapshot. A snapshot holding other
    sources stops the run with the reason. Stages whose inputs (data version, params, upstream
    models) are unchanged are reused from the cache."""
    from gandefect.stages.ingest import sources_to_ingest

    unknown = sorted(set(stages or []) - set(FLOW_STAGES))
    if unknown:
        raise BadInputError(f"--stage {', '.join(unknown)}: stages are {', '.join(FLOW_STAGES[1:])}")
    named = [spec if spec in BUILT_IN_SOURCES else str(Path(spec).expanduser().resolve()) for spec in from_ or []]
    sources_to_ingest(
        project_config(), named or None, replace, exact=True
    )  # a disagreement stops before the flow starts

    runner = flows().task_runner_for(task_runner)
    # taken here first, so a busy project stops before a flow run starts (the flow takes it again)
    with project_lock(state.params.resolve().parent, "run", wait, on_wait=out.print):
        result = flows().retrain.with_options(task_runner=runner)(
            str(state.params),
            state.profile,
            ["ingest", *stages] if stages else None,
            force,
            wait,
            sources=named or None,
            replace=replace,
        )
    times = ", ".join(f"{k} {v:.0f} s" + (" (cached)" if k in result.cached else "") for k, v in result.seconds.items())
    out.print(f"retrain {result.state}: data {result.data_version}; {times}")
    if result.cached:
        out.print(f"reused (inputs unchanged): {', '.join(result.cached)}")
    for role, part in (("detector", result.detector), ("repairer", result.repairer)):
        if part is not None and part.resumed:
            out.print(
                f"resumed: {role} v{part.version}, registered by an interrupted run with "
                "these inputs, gated now instead of trained again"
            )
    for path in result.reports:
        out.print(f"report {path}")
    if result.state != "completed":
        raise typer.Exit(GATE_FAILED_EXIT)


@app.command("schedule")
def schedule_cmd(
    cron: str = typer.Option(..., "--cron", help='Cron schedule, e.g. "0 3 * * 0" (Sundays 03:00).'),
    name: str = typer.Option("weekly", "--name", help="Deployment name (retrain/<name>)."),
    register_only: bool = typer.Option(
        False,
        "--register-only",
        help="Create the deployment and return; a worker or a later `gandefect schedule` runs it.",
    ),
    watch_cron: str | None = typer.Option(
        None,
        "--watch-cron",
        help='Also run `watch` (the champion on the current data; fails when it misses a generator) on this schedule, e.g. "0 * * * *"; a generator it misses and never trained on (brought by ingest-fakes) starts a retrain run at once.',
    ),
) -> None:
    """Serve the retrain flow as a Prefect deployment on a cron schedule (needs PREFECT_API_URL: a Prefect server)."""
    params = str(state.params.resolve())
    if register_only:
        deployment_id = flows().register_schedule(params, state.profile, cron, name)
        out.print(f"deployment retrain/{name} ({deployment_id}) scheduled: {cron}")
        return
    flows().serve_schedule(params, state.profile, cron, name, watch_cron)
