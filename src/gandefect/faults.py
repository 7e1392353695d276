"""Named points where a test can stop a running flow, to check that `kill -9` there loses nothing.

With GANDEFECT_PAUSE_AT=<point> and GANDEFECT_PAUSE_FILE=<path> in the environment, the process
that reaches <point> writes the point's name to <path> and waits there until the file is
removed: the test SIGKILLs the whole `gandefect run` at exactly that moment, or holds it there
while it starts another (tests/integration/test_faults.py). Without them `reached` does nothing.

Points: `ingest:images-written` (the new PNGs are on disk, the manifest not yet),
`gan:<loss>` (that GAN of the zoo starts training), `detectors:registered` (the candidate is
registered, its alias not yet moved), `repairer:registered` (registered, not yet evaluated
nor gated).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_AT = "GANDEFECT_PAUSE_AT"
PAUSE_FILE = "GANDEFECT_PAUSE_FILE"


def reached(point: str) -> None:
    """Pause here (for a test to kill the process, or release it) when the environment names this point."""
    if os.environ.get(PAUSE_AT) != point or not os.environ.get(PAUSE_FILE):
        return
    marker = Path(os.environ[PAUSE_FILE])
    marker.write_text(f"{point} {os.getpid()}\n")
    while marker.exists():
        time.sleep(0.2)
