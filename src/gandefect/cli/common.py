"""What every `gandefect` command shares: the typer app, the global options, the consoles, the
project's config, progress bars and the gate's verdict."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Only what the help pages need is imported here: each command imports its own stack (torch,
# MLflow, Prefect, Great Expectations take seconds each) when it runs, so `--help` answers at once.
from gandefect.lifecycle.lock import project_lock
from gandefect.names import PARAMS_FILE

if TYPE_CHECKING:
    from gandefect.config import Config


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


def project_config() -> Config:
    from gandefect.config import load_config  # pydantic and PyYAML: a command needs them, --help does not

    return load_config(state.params, state.profile)


@contextlib.contextmanager
def progress_bars() -> Iterator:
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


GATE_FAILED_EXIT = 4  # a command whose candidate failed its gate


def print_gate(result) -> None:
    """The gate's verdict, its reasons, and exit 4 when the candidate failed it (None: not gated)."""
    if result is None:
        return
    verdict = "[green]passed[/green]" if result.passed else "[red]failed gate[/red]"
    moved = ", ".join(f"{a} -> v{v}" for a, v in result.aliases.items()) or "aliases untouched"
    out.print(f"model gate {result.name} v{result.version}: {verdict} ({moved}); report {result.report}")
    for reason in result.reasons:
        out.print(f"  - {reason}")
    for reason in result.improvements:
        out.print(f"  + reason to promote: {reason}")
    for row in result.not_judged:
        out.print(f"  ? not judged, missing: {row}")
    if not result.passed:
        raise typer.Exit(GATE_FAILED_EXIT)
