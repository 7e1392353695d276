"""`python -m gandefect.cli ARGS`: the `gandefect` command."""

from gandefect.cli import main

main()
