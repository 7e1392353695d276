"""The detectors' data choices are the same in every process (Python salts str hashes per
process, so anything that iterates a set of names would choose differently from run to run)."""

import os
import subprocess
import sys

SCRIPT = """
import numpy as np
from gandefect.detect.common import Labeled
from gandefect.stages.detectors import capped
names = np.array(["real"] * 6 + [g for g in ("lsgan", "hinge", "wgan-gp", "minimax", "ns") for _ in range(9)])
rows = np.arange(len(names), dtype=np.float32)[:, None, None]  # each image holds its row number
kept = capped(Labeled(rows, (names != "real").astype(np.int64), names), 3, seed=5)
print(kept.images[:, 0, 0].astype(int).tolist())
"""


def test_the_capped_choice_does_not_depend_on_the_process_hash_seed():
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT],
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("1", "2", "3")
    ]
    outputs = [run.communicate() for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in outputs]
    assert len({out for out, _ in outputs}) == 1, outputs
