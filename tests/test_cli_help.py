"""`--help` of every command and subcommand of `gandefect`, in-process.

The command list is read from the typer app itself, so a command added to the CLI is covered
without touching this file."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
import yaml
from typer.testing import CliRunner

from gandefect.cli import app
from tests.conftest import run_cli

ROOT = typer.main.get_command(app)


def _commands(group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """(path, command) for the group itself and everything below it, depth first. (Typer
    vendors its own click, so groups are told apart by what they have, not by their class.)"""
    found = [(path, group)]
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += _commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


COMMANDS = _commands(ROOT)


def test_the_command_list_is_discovered_from_the_app():
    paths = {" ".join(p) for p, _ in COMMANDS}
    # a few that must be there (the rest are whatever the app declares)
    assert {"", "ingest", "run", "serve", "data", "data status", "data validate"} <= paths
    assert len(paths) > 20


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "gandefect" for p, _ in COMMANDS])
def test_every_command_has_help(path, command, tmp_path, monkeypatch):
    args = [*path, "--help"]
    # as the real process sees it: the global callback skips the project lock when "--help" is in argv
    monkeypatch.setattr(sys, "argv", ["gandefect", *args])
    monkeypatch.chdir(tmp_path)
    env = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    result = CliRunner().invoke(app, args, prog_name="gandefect", env=env)
    assert result.exit_code == 0, (args, result.output, result.exception)
    words = " ".join(result.output.split())
    assert f"Usage: gandefect {' '.join(path)}".strip() in words, result.output
    assert (command.help or "").strip(), f"`gandefect {' '.join(path)}` has no help text (docstring)"
    for param in command.params:  # every option and argument the command takes is listed
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "option":
            assert any(opt in result.output for opt in param.opts), (args, param.opts, result.output)
        else:
            usage = next(line for line in result.output.splitlines() if "Usage:" in line).lower()
            assert (param.metavar or param.name).lower() in usage, (args, param.name, usage)
    assert not list(tmp_path.iterdir()), "--help wrote into the working directory"


USAGE_ERRORS = [
    (["generate", "wgan"], "Missing option '--generator'"),
    (["no-such-command"], "No such command 'no-such-command'"),
    (["run", "--no-such-option"], "No such option: --no-such-option"),
]


def test_a_usage_error_gets_the_usage_and_exit_2_not_an_unexpected_error():
    """Through `main()` in its own interpreter, as a user runs it (typer vendors its own click,
    whose exceptions are not click's: they once reached the last-resort handler). The three
    interpreters start at once: each is seconds of imports on one core."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gandefect.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args, _ in USAGE_ERRORS
    ]
    for (args, says), proc in zip(USAGE_ERRORS, procs):
        stdout, stderr = proc.communicate(timeout=300)
        text = " ".join((stdout + stderr).split())
        assert proc.returncode == 2, (args, text)
        assert says in text and "Usage:" in text, (args, text)
        assert "unexpected error" not in text and "Traceback" not in text, (args, text)


def test_the_help_pages_import_no_heavy_stack():
    """`gandefect --help` answers at once: the CLI module imports none of the stacks that take
    seconds (each command imports its own when it runs). Checked in a fresh interpreter, where
    nothing else has imported them."""
    heavy = [
        "torch",
        "mlflow",
        "prefect",
        "great_expectations",
        "bentoml",
        "dvc",
        "pandas",
        "sklearn",
        "numpy",
        "pydantic",
    ]
    heavy += ["yaml", "PIL"]  # and what loading the config or an image takes: a command needs them, --help does not
    code = f"import sys, gandefect.cli; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert loaded.stdout.strip() == "", f"importing gandefect.cli loads {loaded.stdout.strip()}"


def test_config_prints_every_effective_setting_of_the_profile(project):
    out = run_cli(project, "config", check=True).stdout
    printed = yaml.safe_load(out)
    assert out.startswith("# profile tiny, from ")
    assert printed["data"]["max_images"] == 400  # the profile's value
    assert printed["gan"]["families"] is None and printed["detect"]["cnn"]["epochs"] == 1
    assert printed["gates"]["repairer"]["ceiling"] == {"outside_mask_change": 0.0}  # default merged with the profile
