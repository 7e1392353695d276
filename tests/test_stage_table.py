"""The retrain flow's stage table: its rows are the stages `gandefect run --stage` offers, and
the loop that runs a row times it, holds its result to the row's type and reads its gate."""

from __future__ import annotations

import logging

import pytest

from gandefect import orchestrate
from gandefect.flow_results import DetectorsResult, GateVerdict
from gandefect.names import FLOW_STAGES
from gandefect.orchestrate import STAGE_TABLE, FlowRun, Stage, run_stage

LOG = logging.getLogger("test")


def a_run() -> FlowRun:
    return FlowRun(None, "store", False, "parent", 1, None, "results")


def test_the_table_is_the_stages_the_cli_offers_in_order():
    assert [s.name for s in STAGE_TABLE] == FLOW_STAGES == orchestrate.STAGES
    assert STAGE_TABLE[0].name == "ingest"  # every later row reads the data version it returns
    for stage in STAGE_TABLE:
        assert isinstance(stage.returns, type) and stage.inputs
        assert stage.key is None or callable(stage.key)


def test_a_row_is_timed_typed_and_its_failed_gate_stops_the_rows_that_need_a_passed_one():
    run = a_run()
    refused = DetectorsResult(version="2", winner="cnn", metrics={}, gate=GateVerdict(passed=False, reasons=["x"]))
    run_stage(run, Stage("detectors", lambda r: refused, ("ingest",), None, DetectorsResult), LOG)
    assert run.results["detectors"] is refused and run.seconds["detectors"] >= 0
    assert run.state == "failed gate"
    repairer = next(s for s in STAGE_TABLE if s.name == "repairer")
    assert repairer.skip(run) == "a gate failed earlier in this run"
    run_stage(run, repairer, LOG)  # skipped: its task is never called, nothing is recorded
    assert "repairer" not in run.results and "repairer" not in run.seconds


def test_a_row_whose_result_is_not_its_declared_type_stops_the_run():
    run = a_run()
    with pytest.raises(TypeError, match="stage new returned dict, its row says DetectorsResult"):
        run_stage(run, Stage("new", lambda r: {"version": "1"}, ("ingest",), None, DetectorsResult), LOG)
    assert "new" not in run.results
