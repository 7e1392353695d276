"""What each stage of the retrain flow returns: small, typed, picklable records.

Prefect persists a cached task's result under `.gandefect/results/` and hands it back on a rerun
with unchanged inputs, so these hold figures, versions and paths, never models or data. The
stages' own summaries (`DetectorSummary`, `RepairSummary`) carry the trained objects; the flow
keeps only these. The report (`gandefect.report`) and `gandefect run` read them by attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# the columns of a gate table the report shows, in its order
GATE_COLUMNS = (
    "row",
    "generator",
    "metric",
    "value",
    "n",
    "ci_low",
    "ci_high",
    "threshold",
    "champion_value",
    "champion_recorded",
    "headroom",
    "regression",
    "allowed",
    "missing",
)


@dataclass(frozen=True)
class GateVerdict:
    """A candidate's gate: passed (None when it was not gated), why not, why promote, which rows
    had no figure, the aliases it moved, its table as records and the champion it was judged against."""

    passed: bool | None = None
    reasons: list[str] = field(default_factory=list)
    improvements: list[str] = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    table: list[dict] = field(default_factory=list)
    champion_before: str | None = None

    @classmethod
    def of(cls, result) -> GateVerdict:
        """From a `gandefect.lifecycle.gates.GateResult`, or None (not gated)."""
        if result is None:
            return cls()
        return cls(
            passed=result.passed,
            reasons=list(result.reasons),
            improvements=list(result.improvements),
            not_judged=list(result.not_judged),
            aliases=dict(result.aliases),
            table=result.table[list(GATE_COLUMNS)].to_dict(orient="records"),
            champion_before=result.champion,
        )


@dataclass(frozen=True)
class DetectorsResult:
    """The detectors stage: the winning family's registered version, its metrics and gate, the
    judge it registered beside it, and the fake sets and spliced benchmark it was built on."""

    version: str | None
    winner: str
    metrics: dict[str, float]
    gate: GateVerdict
    judge: str | None = None
    fakes_version: str = ""
    spliced_version: str = ""
    report: str = ""
    resumed: bool = False  # registered by an interrupted run with the same inputs, gated now


@dataclass(frozen=True)
class RepairerResult:
    """The repairer stage: its registered version, evaluation figures and gate."""

    version: str
    metrics: dict[str, float]
    gate: GateVerdict
    report: str | None = None
    resumed: bool = False  # registered by an interrupted run with the same inputs, gated now
