"""The `gandefect` command: thin wrappers that load the config and call a stage."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Only what the help pages need is imported here: each command imports its own stack (torch,
# MLflow, Prefect, Great Expectations take seconds each) when it runs, so `--help` answers at once.
from gandefect.config import PARAMS_FILE, Config, load_config
from gandefect.data import sources
from gandefect.errors import BadInputError, DataValidationError, GandefectError
from gandefect.lifecycle.lock import project_lock
from gandefect.names import DETECTOR_MODEL, FLOW_STAGES, INGEST_STAGE, REPAIRER_MODEL, RETRAIN_EXPERIMENT, SERVED_MODELS


def flows():
    """gandefect.orchestrate, the Prefect flows, for the commands that run one."""
    from gandefect import orchestrate

    return orchestrate


app = typer.Typer(
    help="Detect, localize and repair defects in GAN-generated images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and validate the versioned real-image snapshot.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


class _State:
    params: Path = Path(PARAMS_FILE)
    profile: str | None = None
    debug: bool = False


state = _State()


# commands that write data/, the DVC lock, the MLflow registry or the aliases: each holds the
# project lock (gandefect.lifecycle.lock) while it runs; `run` takes it in the flow itself
WRITERS = {
    "ingest",
    "train-gans",
    "sample-fakes",
    "ingest-fakes",
    "train-detectors",
    "gate",
    "promote",
    "rollback",
    "train-repairer",
    "build-spliced",
}


@app.callback()
def _global(
    ctx: typer.Context,
    params: Path = typer.Option(Path(PARAMS_FILE), "--params", help="Parameter file (its folder is the project root)."),
    profile: str | None = typer.Option(
        None, "--profile", envvar="GANDEFECT_PROFILE", help="Named profile in params.yaml: tiny, default, full."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks of unexpected errors."),
) -> None:
    state.params, state.profile, state.debug = params, profile, debug
    if ctx.invoked_subcommand in WRITERS and "--help" not in sys.argv:
        ctx.with_resource(project_lock(params.resolve().parent, ctx.invoked_subcommand))


def _config() -> Config:
    return load_config(state.params, state.profile)


@contextlib.contextmanager
def _progress() -> Iterator:
    """A rich progress bar fed by the stages' (stage, done, total) callback."""
    bars = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        if done == total or done % 50 == 0:
            bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield update


@app.command()
def ingest(
    from_dirs: list[str] = typer.Option(
        None,
        "--from",
        metavar="SOURCE",
        help=f"Folder of images to add (any format, size, mode), or a built-in ({', '.join(sources.BUILT_IN)}); repeatable. Default: data.source, else the snapshot's own sources, else data.default_source.",
    ),
    replace: bool = typer.Option(False, "--replace", help="Start a new snapshot instead of adding to the current one."),
    labels_from_subfolders: bool = typer.Option(
        False, "--labels-from-subfolders", help="Use each image's first subfolder under DIR as its class label."
    ),
    no_version: bool = typer.Option(False, "--no-version", help="Skip DVC commit/push (used by `dvc repro`)."),
) -> None:
    """Add real images to data/real, validate the snapshot, version it with DVC, log an MLflow run."""
    from gandefect.stages.ingest import run_ingest

    cfg = _config()
    with _progress() as progress:
        summary = run_ingest(
            cfg,
            from_dirs,
            replace=replace,
            labels_from_subfolders=labels_from_subfolders,
            version=not no_version,
            progress=progress,
        )
    r = summary.result
    for name in r.skipped_sources:
        out.print(f"[dim]{name}: unchanged since it was ingested; skipped[/dim]")
    if r.replaced:
        out.print("replaced: the snapshot now holds only the sources named (the old one stays in DVC's history)")
    elif r.rebuilt:
        out.print("settings changed: the snapshot was rebuilt from its recorded sources")
    out.print(
        f"ingested: {r.added} new, {r.duplicates} duplicate(s) skipped, {len(r.quarantined)} quarantined; "
        f"snapshot has {r.total} images (train {r.counts.get('train', 0)}, val {r.counts.get('val', 0)}, "
        f"test {r.counts.get('test', 0)})"
    )
    if summary.quarantine_path:
        out.print(
            f"[yellow]quarantined {len(r.quarantined)} unreadable file(s), listed in {summary.quarantine_path}:[/yellow]"
        )
        for q in r.quarantined[:10]:
            out.print(f"  {q.source}/{q.ref}: {q.reason}")
    checks = summary.validation.checks
    out.print(
        f"validation: [green]passed[/green] ({len(checks)}/{len(checks)} expectations), report {summary.report_path}"
    )
    out.print(
        f"data version: [bold]{summary.data_version}[/bold]"
        + (f" (pushed to {summary.remote})" if summary.remote else "")
    )
    out.print(f"mlflow run: {summary.run_id}")


@app.command("train-gans")
def train_gans(
    loss: list[str] = typer.Option(
        None,
        "--loss",
        metavar="L",
        help="Train only this zoo member (repeatable): an adversarial loss of gan.losses "
        "or a family of gan.families in params.yaml (a name it does not know is "
        "refused with the list).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue each GAN from its last checkpoint (and MLflow run)."),
) -> None:
    """Train the GAN zoo: one tracked MLflow run and registered generator per adversarial loss and per other family."""
    from gandefect.stages.gans import run_train_gans

    cfg = _config()
    with _progress() as progress:
        summary = run_train_gans(cfg, loss, resume=resume, progress=progress)
    kind = "test" if summary.feature_space == "labelled" else "nearest-neighbour label"
    quality = f", {kind} accuracy {summary.feature_accuracy:.4f}" if math.isfinite(summary.feature_accuracy) else ""
    out.print(f"feature space {summary.feature_space}{quality}; untrained generator FID {summary.baseline['fid']:.1f}")
    table = Table(title=f"GAN zoo (data {summary.data_version}, {summary.seconds:.0f} s)")
    for col in summary.table.columns:
        table.add_column(col, justify="left" if col == "loss" else "right")
    for row in summary.table.itertuples(index=False):
        table.add_row(*[v if isinstance(v, str) else (f"{v:.0f}" if abs(v) >= 100 else f"{v:.3f}") for v in row])
    out.print(table)
    out.print(f"report {summary.report}; mlflow run {summary.run_id}")


@app.command("sample-fakes")
def sample_fakes(
    no_version: bool = typer.Option(False, "--no-version", help="Skip DVC commit/push (used by `dvc repro`)."),
) -> None:
    """Sample every registered generator (final and early) into data/fakes/<generator>/."""
    from gandefect.stages.detectors import run_sample_fakes

    cfg = _config()
    if no_version:
        cfg = cfg.model_copy(update={"versioning": cfg.versioning.model_copy(update={"enabled": False})})
    with _progress() as progress:
        sets, version, _ = run_sample_fakes(cfg, progress)
    for s in sets:
        out.print(f"{s.name}: {s.count} images ({s.path})")
    out.print(f"fakes version: [bold]{version}[/bold]")


@app.command("ingest-fakes")
def ingest_fakes(
    folder: str = typer.Argument(..., metavar="DIR", help="Folder of generated images (any format, size, mode)."),
    generator: str = typer.Option(..., "--generator", help="Name of the generator family these images come from."),
) -> None:
    """Add externally generated images as another generator for the detectors."""
    from gandefect.stages.detectors import run_ingest_fakes

    cfg = _config()
    fake_set, skipped, version = run_ingest_fakes(cfg, folder, generator)
    out.print(
        f"{fake_set.name}: {fake_set.count} images in {fake_set.path}"
        + (f"; {skipped} unreadable file(s) skipped" if skipped else "")
    )
    out.print(f"fakes version: [bold]{version}[/bold]")


@app.command("train-detectors")
def train_detectors(
    no_sample: bool = typer.Option(
        False, "--no-sample", help="Use data/fakes as it is instead of re-sampling the generators."
    ),
    no_gate: bool = typer.Option(False, "--no-gate", help="Register the winner without judging it by the model gate."),
    without: list[str] | None = typer.Option(
        None,
        "--without",
        help="Train without this generator family's samples (it stays in the evaluation): what a model that never saw it does. Repeatable.",
    ),
) -> None:
    """Train the CNN and spectral detectors, evaluate them leave-one-family-out, register the winner
    and judge it beside the champion on the same data."""
    from gandefect.stages.detectors import run_train_detectors

    cfg = _config()
    with _progress() as progress:
        summary = run_train_detectors(
            cfg, sample=not no_sample, progress=progress, gate=not no_gate, without=without or []
        )
    keys = [
        "auc_seen",
        "ap_seen",
        "auc_unseen_min",
        "auc_unseen_mean",
        "auc_jpeg90",
        "auc_jpeg75",
        "auc_jpeg50",
        "auc_blur0.5",
        "auc_blur1.0",
        "auc_resize",
        "ece",
        "acc_real",
        "acc_fake",
        "pixel_ap",
        "iou",
        "images_per_second",
    ]
    table = Table(title=f"detectors (fakes {summary.fakes_version})")
    table.add_column("metric")
    for family in summary.results:
        table.add_column(family + (" (winner)" if family == summary.winner else ""), justify="right")
    for key in keys:
        table.add_row(
            key,
            *[
                f"{r.metrics.get(key, float('nan')):.4f}" if key != "images_per_second" else f"{r.metrics[key]:.0f}"
                for r in summary.results.values()
            ],
        )
    out.print(table)
    out.print(
        f"registered gandefect-detector v{summary.detector_version} ({summary.winner})"
        + (f", gandefect-judge v{summary.judge_version}" if summary.judge_version else "")
    )
    out.print(f"report {summary.report}")
    if summary.gate is not None:
        _print_gate(summary.gate)
        if not summary.gate.passed:
            raise typer.Exit(4)


def _print_gate(result) -> None:
    verdict = "[green]passed[/green]" if result.passed else "[red]failed gate[/red]"
    moved = ", ".join(f"{a} -> v{v}" for a, v in result.aliases.items()) or "aliases untouched"
    out.print(f"model gate {result.name} v{result.version}: {verdict} ({moved}); report {result.report}")
    for reason in result.reasons:
        out.print(f"  - {reason}")
    for reason in result.improvements:
        out.print(f"  + reason to promote: {reason}")
    for row in result.not_judged:
        out.print(f"  ? not judged, missing: {row}")


@app.command("gate")
def gate_cmd(
    version: str | None = typer.Argument(None, help="Version to judge (default: the newest)."),
    model: str = typer.Option(DETECTOR_MODEL, "--model", help="Registered model name."),
    apply: bool = typer.Option(True, "--apply/--dry-run", help="Move the aliases when it passes."),
) -> None:
    """Judge a registered version by the model suite and against the champion, both evaluated on
    today's data; exit 4 when it fails."""
    from gandefect.lifecycle import gates, registry, tracking
    from gandefect.stages import detectors, repair

    cfg = _config()
    tracking.setup(cfg)
    version = version or registry.latest_uri(model, "train-detectors").rsplit("/", 1)[-1]
    gates.version_metrics(model, version)  # a clear error for a version that does not exist
    with out.status("evaluating the candidate and the champion on today's data..."):
        if model == REPAIRER_MODEL:
            candidate, champion_today = repair.gate_figures(cfg, version)
        else:
            candidate, champion_today = detectors.gate_figures(cfg, version, model)
    result = gates.gate(cfg, model, version, candidate, champion_today)
    if apply:
        gates.apply_gate(cfg, result)
    _print_gate(result)
    if not result.passed:
        raise typer.Exit(4)


@app.command("promote")
def promote_cmd(
    version: str = typer.Argument(..., help="Registered version to make champion."),
    model: str = typer.Option(DETECTOR_MODEL, "--model", help="Registered model name."),
) -> None:
    """Point the `champion` alias at VERSION (no gate: an operator's decision)."""
    from gandefect.lifecycle import gates, tracking

    tracking.setup(_config())
    previous = gates.promote(model, version)
    out.print(f"{model}: champion -> v{version}" + (f" (was v{previous})" if previous else ""))


@app.command("rollback")
def rollback_cmd(model: str = typer.Option(DETECTOR_MODEL, "--model", help="Registered model name.")) -> None:
    """Move `champion` back to the version that held it before."""
    from gandefect.lifecycle import gates, tracking

    tracking.setup(_config())
    current, target = gates.rollback(model)
    out.print(f"{model}: champion v{current} -> v{target}")


def _reused(cached: str | None) -> str:
    names = [n for n in (cached or "").split(",") if n and n != "none"]
    return f"{len(names)} tasks" if names else "-"


@app.command("config")
def config_cmd() -> None:
    """The effective configuration as YAML: every setting, the typed defaults with params.yaml and
    the profile applied (the reasons for the defaults are in src/gandefect/config.py)."""
    cfg = _config()
    typer.echo(f"# profile {cfg.profile}, from {Path(state.params).resolve()}")
    typer.echo(yaml.safe_dump(cfg.to_params(), sort_keys=False, width=100), nl=False)


@app.command("status")
def status_cmd(
    traffic: str | None = typer.Option(
        None,
        "--traffic",
        help="URL of the running service (e.g. http://localhost:3000): compare the scores it served with the champion's validation.",
    ),
) -> None:
    """Champions, challengers, their data versions and metrics; the champion per generator on the
    current data; the last retrain flow runs; with --traffic, drift of the served scores."""
    from gandefect.lifecycle import gates, tracking

    cfg = _config()
    tracking.setup(cfg)
    table = Table(title="models")
    for col in ["model", "champion", "challenger", "latest", "data version", "champion metrics"]:
        table.add_column(col)
    rows = gates.status(SERVED_MODELS)
    for row in rows:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(row.get("metrics", {}).items()))
        table.add_row(
            row["model"],
            *[f"v{row[k]}" if row.get(k) else "-" for k in ("champion", "challenger", "latest")],
            row.get("data_version") or "-",
            metrics or "-",
        )
    out.print(table)
    _print_champion_figures(cfg, rows[0].get("champion"))
    runs = tracking.last_runs(cfg, RETRAIN_EXPERIMENT, 5)
    flows = Table(title="last retrain flow runs")
    for col in ["started", "state", "data version", "seconds", "reused from cache", "flow run"]:
        flows.add_column(col)
    for r in runs:
        tags, seconds = r.data.tags, sum(v for k, v in r.data.metrics.items() if k.startswith("seconds_"))
        flows.add_row(
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.info.start_time / 1000)),
            tags.get("state", r.info.status.lower()),
            tags.get("data_version", "-"),
            f"{seconds:.0f}" if seconds else "-",
            _reused(tags.get("cached")),
            tags.get("flow_run_id", "-"),
        )
    out.print(flows if runs else "no retrain flow runs yet: `gandefect run`")
    if traffic:
        _print_drift(cfg, traffic, rows[0].get("champion"))


def _print_champion_figures(cfg: Config, champion: str | None) -> None:
    """The champion detector per generator on the current data (the last gate or watch)."""
    from gandefect.lifecycle import champion_record

    record = champion_record.read(cfg, DETECTOR_MODEL)
    if champion is None:
        return
    if record is None or record.version != champion:
        out.print(f"champion v{champion} per generator: not evaluated on the current data yet (`gandefect watch`)")
        return
    per = champion_record.per_generator(record.metrics, cfg.gates)
    out.print(
        f"champion v{record.version} per generator on data {record.data_version} "
        f"(fakes {record.fakes_version}; {record.source} at {record.when}):"
    )
    table = Table()
    for col in per.columns:
        table.add_column(col)
    for r in per.itertuples(index=False):
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r])
    out.print(table)


def _print_drift(cfg: Config, url: str, champion: str | None) -> None:
    """The scores a service served (its /metrics) beside the validation histogram of the
    detector version it serves (read from its /metadata; the champion when that fails)."""
    import mlflow

    from gandefect.evaluate import drift

    base = url.rstrip("/")
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            page = response.read().decode()
    except OSError as exc:
        raise BadInputError(f"--traffic {url}: cannot read {base}/metrics ({exc})") from None
    try:
        request = urllib.request.Request(base + "/metadata", b"{}", {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            version = str(json.loads(response.read())["detector"]["version"])
    except (OSError, KeyError, ValueError):
        version = champion
    if version is None:
        raise BadInputError(f"no champion {DETECTOR_MODEL} to compare traffic with")
    run_id = mlflow.MlflowClient().get_model_version(DETECTOR_MODEL, version).run_id
    try:
        reference = mlflow.artifacts.load_dict(f"runs:/{run_id}/score_histogram.json")
    except Exception:  # noqa: BLE001 - MLflow raises its own types per store
        raise BadInputError(
            f"{DETECTOR_MODEL} v{version} has no validation score histogram "
            "(logged since this version of gandefect): retrain it"
        ) from None
    served = {"model_version": version}
    counts = drift.parse_prometheus(page, match=served)
    verdicts = drift.parse_counter(page, match=served)
    if not sum(counts):
        out.print(f"traffic: {url} has served no image with {DETECTOR_MODEL} v{version} yet")
        return
    flagged = verdicts.get("fake", 0.0) / max(1.0, sum(verdicts.values()))
    result = drift.compare(reference["counts"], reference["flagged"], counts, flagged)
    table = Table(title=f"served scores of v{version} ({url}) beside its validation mix")
    for col in ["p_fake up to", "validation share", "traffic share"]:
        table.add_column(col)
    for edge, v, t in zip(drift.BUCKETS, reference["counts"], counts):
        table.add_row(f"{edge:.1f}", f"{v / max(1, sum(reference['counts'])):.3f}", f"{t / sum(counts):.3f}")
    out.print(table)
    verdict = "[red]SHIFTED[/red]" if result["shifted"] else "[green]stable[/green]"
    out.print(
        f"drift: {verdict}: PSI {result['psi']:.3f} (shifted above {drift.SHIFT_PSI}); called fake "
        f"{result['flagged_traffic']:.3f} of {result['traffic_images']} served images against "
        f"{result['flagged_validation']:.3f} of {result['validation_images']} in validation"
    )


WATCH_ALERT_EXIT = 5  # `watch`: the champion misses a generator of the current data


@app.command("watch")
def watch_cmd() -> None:
    """Re-evaluate the champion detector on the current data (every generator, new fake sets
    included); exit 5 and a failed Prefect flow run when it misses a generator."""
    from gandefect.lifecycle import champion_record

    cfg = _config()
    state_ = flows().watch(str(state.params), state.profile, return_state=True)
    result = state_.result(raise_on_failure=False)
    if isinstance(result, BaseException):  # the flow itself failed (no champion, no data, ...)
        raise result

    record = champion_record.read(cfg, DETECTOR_MODEL)
    _print_champion_figures(cfg, record.version)
    if state_.is_failed():
        for line in champion_record.alerts(record, cfg.gates):
            out.print(f"[red]ALERT[/red] {line}")
        raise typer.Exit(WATCH_ALERT_EXIT)
    out.print("the champion catches every generator of the current data")


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
        help=f"Ingest exactly this source (repeatable): a folder of images or a built-in ({', '.join(sources.BUILT_IN)}). Default: data.source, else the snapshot's own sources.",
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
    named = [spec if spec in sources.BUILT_IN else str(Path(spec).expanduser().resolve()) for spec in from_ or []]
    sources_to_ingest(_config(), named or None, replace, exact=True)  # a disagreement stops before the flow starts

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
        raise typer.Exit(4)


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


@app.command("build-bento")
def build_bento_cmd(
    force: bool = typer.Option(False, "--force", help="Build even if a bento of the same champions exists."),
) -> None:
    """Package the champion detector and repairer as a bento (weights, thresholds, metadata; no MLflow needed to serve)."""
    from gandefect.lifecycle import bento

    built = bento.build(_config(), force)
    out.print(f"bento {built.tag} ({'reused: same champions' if built.reused else 'built'}) at {built.path}")
    out.print(f"models: {', '.join(built.models.values())}")
    for role, why in built.unavailable.items():
        out.print(f"[yellow]not served: {role}: {why} (its API answers 503 with this reason)[/yellow]")
    out.print(f"serve it: bentoml serve {built.tag}   (or: gandefect serve)")


@app.command("serve")
def serve_cmd(
    port: int | None = typer.Option(None, "--port", help="HTTP port (default: serve.port in params.yaml, 3000)."),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Build a new bento even if one of the same champions exists."
    ),
) -> None:
    """Serve the champions over HTTP (BentoML): the web page at /, the APIs, /docs and /readyz.

    Builds the bento first when the champions changed since the last build."""
    from gandefect.lifecycle import bento

    cfg = _config()
    built = bento.build(cfg, rebuild)
    port = port or cfg.serve.port
    out.print(f"serving {built.tag} on http://localhost:{port}/  (ready when /readyz answers 200; Ctrl-C stops)")
    command = bento.serve_command(built.tag, port)
    try:
        code = subprocess.call(command, env={**os.environ, "BENTOML_DO_NOT_TRACK": "true"})
    except KeyboardInterrupt:
        code = 0
    if code:
        raise typer.Exit(code)


@app.command("evaluate-detector")
def evaluate_detector(
    model: str | None = typer.Option(None, "--model", help="Model URI (default: latest gandefect-detector)."),
) -> None:
    """Evaluate a detector on the current test split and fake sets."""
    from gandefect.stages.detectors import run_evaluate_detector

    uri, metrics = run_evaluate_detector(_config(), model)
    table = Table(title=uri, show_header=False)
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}")
    out.print(table)


@app.command("build-spliced")
def build_spliced(
    no_version: bool = typer.Option(False, "--no-version", help="Skip DVC commit/push (used by `dvc repro`)."),
) -> None:
    """Build the spliced-defect benchmark: real val/test images with a generated region and its mask."""
    from gandefect.stages.localize import run_build_spliced

    manifest, version = run_build_spliced(_config(), version=not no_version)
    counts = manifest["split"].value_counts()
    out.print(
        f"spliced benchmark: {counts.get('val', 0)} val, {counts.get('test', 0)} test images; "
        f"mask area {manifest['area'].min():.2f}-{manifest['area'].max():.2f}"
    )
    out.print(f"spliced version: [bold]{version}[/bold]")


@app.command("evaluate-localization")
def evaluate_localization_cmd(
    model: str | None = typer.Option(None, "--model", help="Detector URI (default: latest gandefect-detector)."),
) -> None:
    """Pixel AP and IoU of a detector's defect maps on the spliced benchmark."""
    from gandefect.lifecycle import tracking
    from gandefect.lifecycle.registry import latest_uri, load_detector
    from gandefect.stages.localize import evaluate_localization

    cfg = _config()
    tracking.setup(cfg)
    uri = model or latest_uri(DETECTOR_MODEL, "train-detectors")
    metrics = evaluate_localization(cfg, load_detector(uri))
    table = Table(title=f"localization: {uri}", show_header=False)
    for key, value in metrics.items():
        table.add_row(key, f"missing: {metrics.missing[key]}" if key in metrics.missing else f"{value:.4f}")
    out.print(table)


@app.command("train-repairer")
def train_repairer_cmd(
    no_evaluate: bool = typer.Option(
        False, "--no-evaluate", help="Skip the repair evaluation (and so the gate) after training."
    ),
    no_gate: bool = typer.Option(
        False, "--no-gate", help="Register the repairer without judging it by the model gate."
    ),
) -> None:
    """Train the inpainting repairer on real images, register gandefect-repairer, evaluate and gate it."""
    from gandefect.stages.repair import run_train_repairer

    with _progress() as progress:
        summary = run_train_repairer(_config(), evaluate=not no_evaluate, progress=progress, gate=not no_gate)
    out.print(f"registered gandefect-repairer v{summary.version} (trained in {summary.train_seconds:.0f} s)")
    if summary.evaluation:
        _print_repair_evaluation(summary.evaluation)
    if summary.gate is not None:
        _print_gate(summary.gate)
        if not summary.gate.passed:
            raise typer.Exit(4)


@app.command("evaluate-repair")
def evaluate_repair_cmd(
    model: str | None = typer.Option(None, "--model", help="Repairer URI (default: latest gandefect-repairer)."),
) -> None:
    """Repair samples of every generator and the spliced benchmark; FID, judge and PSNR before/after."""
    from gandefect.lifecycle.served import load_repairer
    from gandefect.stages.repair import run_evaluate_repair

    cfg = _config()
    with _progress() as progress:
        evaluation = run_evaluate_repair(cfg, load_repairer(cfg, model), progress=progress)
    _print_repair_evaluation(evaluation)


def _print_repair_evaluation(evaluation) -> None:
    table = Table(title="repair per generator")
    cols = [
        "fid_before",
        "fid_after",
        "fid_ratio",
        "judge_pfake_before",
        "judge_pfake_after",
        "judge_ratio",
        "judge_excess_changed",
        "changed",
        "refused",
        "mask_area",
        "iterations",
        "outside_mask_change",
    ]
    table.add_column("generator")
    for c in cols:
        table.add_column(c, justify="right")
    for name, row in evaluation.table.iterrows():
        table.add_row(name, *[f"{row[c]:.3f}" if c not in ("outside_mask_change",) else f"{row[c]:.0f}" for c in cols])
    out.print(table)
    m = evaluation.metrics
    if "psnr_mask" in m.missing:
        out.print(f"psnr_mask on spliced test: missing ({m.missing['psnr_mask']})")
    else:
        out.print(
            f"psnr_mask on spliced test: repairer {m['psnr_mask']:.2f} dB, mean fill {m['psnr_mask_mean_fill']:.2f} dB, "
            f"biharmonic {m['psnr_mask_biharmonic']:.2f} dB"
        )
    out.print(f"report {evaluation.report}")


@app.command("repair")
def repair_cmd(
    images: list[Path] = typer.Argument(..., help="Image files (any format and size; converted as at ingest)."),
    mask: Path | None = typer.Option(
        None,
        "--mask",
        help="Mask image (white = rewrite), same size as the model input; skips detection and inpaints exactly there.",
    ),
    out_dir: Path = typer.Option(
        Path("repaired"), "--out", help="Folder for <name>.png, <name>.mask.png and repair.csv."
    ),
    iterations: int | None = typer.Option(
        None, "--iterations", min=1, help="Most detect -> mask -> inpaint passes (default: params)."
    ),
) -> None:
    """Detect, mask, inpaint and re-score images with the registered detector and repairer."""
    from gandefect.stages.apply import run_repair

    table, folder = run_repair(
        _config(), [str(p) for p in images], str(mask) if mask else None, str(out_dir), iterations
    )
    _print_rows(table, f"repaired into {folder}")


@app.command("generate")
def generate_cmd(
    generator: str = typer.Option(..., "--generator", help="Loss of a registered generator, e.g. hinge."),
    n: int = typer.Option(16, "--n", min=1, help="Number of images."),
    clean: bool = typer.Option(False, "--clean", help="Repair every sample with the detector and repairer."),
    reject: bool = typer.Option(
        False, "--reject", help="Draw repair.reject_factor x n and keep the n least suspicious."
    ),
    out_dir: Path = typer.Option(Path("generated"), "--out", help="Output folder."),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed (default: params seed)."),
) -> None:
    """Sample a registered generator, optionally cleaned by the repair pipeline."""
    from gandefect.stages.apply import run_generate

    table, folder = run_generate(_config(), generator, n, clean, reject, str(out_dir), seed)
    if clean:
        _print_rows(table, f"{n} cleaned samples in {folder}")
        out.print(f"mean p_fake {table['score_before'].mean():.3f} -> {table['score_after'].mean():.3f}")
    else:
        out.print(f"{n} samples in {folder}")


def _print_rows(table, title: str) -> None:
    shown = Table(title=title)
    for c in ["image", "score_before", "score_after", "mask_area", "iterations", "stopped"]:
        shown.add_column(c, justify="left" if c in ("image", "stopped") else "right")
    for _, row in table.head(20).iterrows():
        shown.add_row(
            str(row["image"]),
            f"{row['score_before']:.3f}",
            f"{row['score_after']:.3f}",
            f"{row['mask_area']:.3f}",
            str(row["iterations"]),
            row["stopped"],
        )
    out.print(shown)
    if len(table) > 20:
        out.print(f"... {len(table) - 20} more rows in the CSV")


@data_app.command("status")
def data_status() -> None:
    """Print the data version (DVC hash), image counts per split and whether the remote has it."""
    from gandefect.data.snapshot import read_manifest
    from gandefect.lifecycle import versioning

    cfg = _config()
    manifest = read_manifest(cfg.real_dir)
    status = versioning.stage_status(cfg, INGEST_STAGE, cfg.data.real_dir)
    table = Table(title=f"{cfg.data.real_dir} (profile {cfg.profile})", show_header=False)
    table.add_row("data version", status.version or "none: run `gandefect ingest`")
    table.add_row(
        "workspace",
        "matches the version" if status.workspace_matches else "differs from the version (uncommitted changes)",
    )
    remote = {True: "has it", False: "does not have it: run `gandefect ingest` or `dvc push`", None: "unreachable"}[
        status.remote_has_it
    ]
    table.add_row(f"remote {cfg.versioning.remote_name}", f"{remote} ({versioning.remote_url(cfg)})")
    counts = manifest["split"].value_counts() if len(manifest) else {}
    for split in ("train", "val", "test"):
        table.add_row(split, str(int(counts.get(split, 0))))
    table.add_row("total", str(len(manifest)))
    out.print(table)


@data_app.command("validate")
def data_validate() -> None:
    """Run the Great Expectations data suite on the snapshot as it is on disk."""
    from gandefect.stages.ingest import validate_snapshot

    cfg = _config()
    with _progress() as progress:
        report, path = validate_snapshot(cfg, progress)
    if not report.success:
        raise DataValidationError(_failure_text(report, path), path)
    out.print(
        f"validation: [green]passed[/green] ({len(report.checks)} expectations on {report.rows} images), report {path}"
    )


def _failure_text(report, path) -> str:
    lines = [f"the snapshot failed {len(report.failures)} of {len(report.checks)} expectations (report: {path}):"]
    for c in report.failures:
        ex = f"; e.g. {c.examples[:3]}" if c.examples else ""
        lines.append(f"  - {c.expectation} on {c.column}: {c.summary}{ex}")
    return "\n".join(lines)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # without standalone mode click returns typer.Exit's code
        if isinstance(code, int) and code:
            sys.exit(code)
    except (click.exceptions.Exit, typer.Exit) as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        console.print("aborted")
        sys.exit(130)
    except (click.ClickException, typer.TyperException) as exc:  # typer vendors its own click: both
        exc.show()  # (a usage error: the command's usage + why)
        sys.exit(getattr(exc, "exit_code", 2))
    except DataValidationError as exc:
        console.print(f"[red]data validation failed:[/red] {exc}")
        sys.exit(exc.exit_code)
    except GandefectError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(exc.exit_code)
    except Exception as exc:  # last resort: a readable line instead of a traceback
        if state.debug:
            raise
        console.print(
            f"[red]unexpected error ({type(exc).__name__}):[/red] {exc}\nrerun with --debug for the traceback"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
