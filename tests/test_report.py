"""The retrain report: figures as a reader wants them, one report per flow run, a stable latest link."""

from __future__ import annotations

import math

from gandefect.config import load_config
from gandefect.flow_results import DetectorsResult, GateVerdict
from gandefect.report import RetrainResult, markdown, number, write_retrain_reports
from tests.conftest import write_params

RESULT = RetrainResult(
    data_version="abc123",
    zoo={"hinge": {"fid": 12.3456, "fid_ratio": 0.04213, "generator_steps": 200.0, "train_seconds": 10.8}},
    detector=DetectorsResult(
        version="3",
        winner="cnn",
        metrics={"auc_seen": 0.987654, "ece": 0.0312},
        gate=GateVerdict(passed=True, aliases={"champion": "3"}, champion_before="2"),
    ),
    repairer=None,
    seconds={"ingest": 3.04, "gans": 61.0},
)


def test_integers_read_as_integers_and_fractions_keep_four_digits():
    assert [number(v) for v in (200.0, 10.8, 0.987654, 12.3456, 3, None, math.nan, "cnn")] == [
        "200",
        "10.8",
        "0.9877",
        "12.3",
        "3",
        "",
        "",
        "cnn",
    ]
    text = markdown(RESULT)
    zoo_row = next(line for line in text.splitlines() if line.startswith("| hinge"))
    assert [c.strip() for c in zoo_row.strip("|").split("|")] == ["hinge", "12.3", "0.04213", "", "", "", "200", "10.8"]
    assert "| auc_seen | 0.9877 |" in text and "200.0" not in text


def test_every_flow_run_keeps_its_report_and_latest_points_at_the_newest(tmp_path):
    cfg = load_config(write_params(tmp_path))
    first = write_retrain_reports(cfg, RESULT, "11111111-aaaa")
    second = write_retrain_reports(cfg, RESULT, "22222222-bbbb")
    assert {p.name for p in first}.isdisjoint({p.name for p in second})
    assert all(p.exists() for p in [*first, *second])
    latest = cfg.report_dir / "retrain-latest.html"
    assert latest.resolve() == second[1].resolve()
    assert (cfg.report_dir / "retrain-latest.md").read_text() == second[0].read_text()
