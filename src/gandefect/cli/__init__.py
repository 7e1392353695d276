"""The `gandefect` command: thin wrappers that load the config and call a stage. Each module
holds a group of commands (`data`, `train`, `lifecycle`, `flow`, `serve`); importing them here
registers them on the one typer app, in the order `gandefect --help` lists them."""

from __future__ import annotations

import sys

import click
import typer

from gandefect.cli import data, flow, lifecycle, serve, train  # noqa: F401 - importing registers the commands
from gandefect.cli.common import app, console, state
from gandefect.errors import DataValidationError, GandefectError

__all__ = ["app", "main"]


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
