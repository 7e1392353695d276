"""The code passes ruff's lint and format checks at the locked version, and every suppression says why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"
NOQA = re.compile(r"#\s*noqa\b(?P<rest>.*)$")
REASONED = re.compile(r":\s*[A-Z]+[0-9]+(,\s*[A-Z]+[0-9]+)*\s+-\s+\S")  # the rule, a dash, then the reason


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUFF), *args, str(REPO)], cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_finds_nothing_to_lint():
    proc = _ruff("check", "--no-cache", "--output-format", "concise")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_code_is_as_ruff_formats_it():
    proc = _ruff("format", "--check", "--no-cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_noqa_names_its_rule_and_says_why():
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True)
    bare = []
    for name in tracked.stdout.split():
        for number, line in enumerate((REPO / name).read_text().splitlines(), 1):
            found = NOQA.search(line)
            if found and not REASONED.match(found["rest"]):
                bare.append(f"{name}:{number}: {line.strip()}")
    assert not bare, "a noqa without its rule and reason:\n" + "\n".join(bare)
