"""The model lifecycle commands: the gate, promotion and rollback by alias, `status`, `watch`
and the effective `config`."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from gandefect.cli.common import app, flows, out, print_gate, project_config, state
from gandefect.errors import BadInputError
from gandefect.names import DETECTOR_MODEL, REPAIRER_MODEL, RETRAIN_EXPERIMENT, SERVED_MODELS

if TYPE_CHECKING:
    from gandefect.config import Config


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

    cfg = project_config()
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
    print_gate(result)


@app.command("promote")
def promote_cmd(
    version: str = typer.Argument(..., help="Registered version to make champion."),
    model: str = typer.Option(DETECTOR_MODEL, "--model", help="Registered model name."),
) -> None:
    """Point the `champion` alias at VERSION (no gate: an operator's decision)."""
    from gandefect.lifecycle import gates, tracking

    tracking.setup(project_config())
    previous = gates.promote(model, version)
    out.print(f"{model}: champion -> v{version}" + (f" (was v{previous})" if previous else ""))


@app.command("rollback")
def rollback_cmd(model: str = typer.Option(DETECTOR_MODEL, "--model", help="Registered model name.")) -> None:
    """Move `champion` back to the version that held it before."""
    from gandefect.lifecycle import gates, tracking

    tracking.setup(project_config())
    current, target = gates.rollback(model)
    out.print(f"{model}: champion v{current} -> v{target}")


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

    cfg = project_config()
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


def _reused(cached: str | None) -> str:
    names = [n for n in (cached or "").split(",") if n and n != "none"]
    return f"{len(names)} tasks" if names else "-"


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

    cfg = project_config()
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


@app.command("config")
def config_cmd() -> None:
    """The effective configuration as YAML: every setting, the typed defaults with params.yaml and
    the profile applied (the reasons for the defaults are in src/gandefect/config.py)."""
    import yaml

    cfg = project_config()
    typer.echo(f"# profile {cfg.profile}, from {Path(state.params).resolve()}")
    typer.echo(yaml.safe_dump(cfg.to_params(), sort_keys=False, width=100), nl=False)
