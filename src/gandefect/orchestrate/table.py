"""The stage table the retrain flow reads: one `Stage` row per stage, and the `FlowRun` each
row reads its inputs from and records its result in."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from prefect import get_run_logger

from gandefect.config import Config
from gandefect.data.fakes import external_digest
from gandefect.flow_results import DetectorsResult, RepairerResult
from gandefect.lifecycle import registry, tracking
from gandefect.lifecycle.bento import BuiltBento
from gandefect.lifecycle.gates import CHAMPION, alias_version
from gandefect.lifecycle.zoo import registered_generators, zoo_members
from gandefect.names import DETECTOR_MODEL, JUDGE_MODEL
from gandefect.orchestrate.tasks import (
    bento_task,
    detectors_key,
    detectors_task,
    flow_run_id,
    gan_key,
    ingest_task,
    repairer_key,
    repairer_task,
    train_gan_task,
    zoo_setup_task,
)
from gandefect.stages.gans import finish_zoo, longest_first


@dataclass
class FlowRun:
    """One retrain run as its stages see it: the settings, the run's bookkeeping (each stage's
    seconds, the tasks the cache answered, the state) and every finished stage's result."""

    cfg: Config
    store: str  # the MLflow store's identity, part of every cache key
    force: bool
    parent_run_id: str
    threads: int | None  # torch threads per concurrent GAN worker
    cache_dir: Path
    results_storage: str
    sources: list[str] | None = None
    replace: bool = False
    results: dict[str, object] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)  # each stage's end, wall clock
    cached: list[str] = field(default_factory=list)
    state: str = "completed"  # completed | failed gate
    _generators: dict | None = None

    @property
    def data_version(self) -> str:
        return self.results["ingest"]

    def generators(self) -> dict:
        """The registered generators the detectors and the repairer learn from (read once, after the zoo)."""
        if self._generators is None:
            self._generators = registered_generators(self.cfg)
        return self._generators

    def cached_task(self, t):
        # records and results live with the project (a fresh clone starts with none); results
        # in Prefect's home would fail to load under another PREFECT_HOME instead of retraining
        return t.with_options(
            cache_policy=t.cache_policy.configure(key_storage=self.cache_dir),
            result_storage=self.results_storage,
            refresh_cache=self.force,
        )

    def call(self, name: str, t, *args):
        """Run a cached task; note `name` among the cached when the cache answered."""
        state = self.cached_task(t)(*args, return_state=True)
        if state.name == "Cached":
            self.cached.append(name)
        return state.result()

    def timed(self, name: str, started: float) -> None:
        self.seconds[name] = time.perf_counter() - started
        self.ended[name] = time.time()


def _ingest(run: FlowRun) -> str:
    version = ingest_task(run.cfg, run.sources, run.replace)
    mlflow.set_tag("data_version", version)
    get_run_logger().info("data version %s", version)
    return version


def _gans(run: FlowRun) -> dict[str, dict]:
    """The zoo's set-up, then every member submitted at once (longest first) to the task runner."""
    cfg, started = run.cfg, time.perf_counter()
    setup = run.call("zoo-setup", zoo_setup_task, cfg, run.data_version, run.store)
    run.timed("zoo-setup", started)
    gan_task = run.cached_task(train_gan_task)
    futures = {
        loss: gan_task.submit(cfg, loss, setup, run.store, run.parent_run_id, flow_run_id(), run.threads)
        for loss in longest_first(cfg, zoo_members(cfg))
    }
    zoo = {loss: futures[loss].result() for loss in zoo_members(cfg)}
    run.cached += [f"gan-{loss}" for loss, f in futures.items() if f.state.name == "Cached"]
    _, report = finish_zoo(cfg, zoo, setup)
    tracking.log_artifacts([report, report.with_suffix(".csv")], "zoo")
    return zoo


def _detectors(run: FlowRun) -> DetectorsResult:
    args = (run.cfg, run.data_version, run.generators(), external_digest(run.cfg), run.store, not run.force)
    return run.call("detectors", detectors_task, *args)


def _repairer(run: FlowRun) -> RepairerResult:
    detector = run.results.get("detectors")
    served = {  # the repairer is evaluated with the detector the service runs
        "detector": alias_version(DETECTOR_MODEL, CHAMPION) or (detector.version if detector else None),
        "judge": (detector.judge if detector else None) or registry_latest(JUDGE_MODEL),
    }
    return run.call(
        "repairer", repairer_task, run.cfg, run.data_version, run.generators(), served, run.store, not run.force
    )


def _bento(run: FlowRun) -> BuiltBento:
    built = bento_task(run.cfg)
    if built.reused:
        run.cached.append("bento")
    mlflow.set_tag("bento", built.tag)
    return built


def _after_a_failed_gate(run: FlowRun) -> str | None:
    return "a gate failed earlier in this run" if run.state != "completed" else None


def _without_champion(run: FlowRun) -> str | None:
    # the bento packages the champions after the gates: the detector's champion is served even
    # when the repairer's candidate was refused (its champion stays and is packaged; without
    # one, the service answers repair with 503 and the reason)
    return None if _has_champion(DETECTOR_MODEL) else "no champion detector to serve"


def _never(run: FlowRun) -> str | None:
    return None


@dataclass(frozen=True)
class Stage:
    """One row of the retrain flow. `run` calls the stage's task with its inputs taken from the
    run so far; `inputs` names what it reads (earlier stages' results, or the run's settings);
    `key` is its task's cache key (None: it runs every time; the result says what it reused);
    `returns` is the type of its result; `skip` gives a reason not to run it in this run."""

    name: str
    run: Callable[[FlowRun], object]
    inputs: tuple[str, ...]
    key: Callable | None
    returns: type
    skip: Callable[[FlowRun], str | None] = _never


STAGE_TABLE: tuple[Stage, ...] = (
    Stage("ingest", _ingest, ("sources",), None, str),
    Stage("gans", _gans, ("ingest",), gan_key, dict),
    Stage(
        "detectors", _detectors, ("ingest", "registered generators", "external fakes"), detectors_key, DetectorsResult
    ),
    Stage(
        "repairer",
        _repairer,
        ("ingest", "registered generators", "detectors"),
        repairer_key,
        RepairerResult,
        _after_a_failed_gate,
    ),
    Stage("bento", _bento, ("detectors", "repairer"), None, BuiltBento, _without_champion),
)
STAGES = [s.name for s in STAGE_TABLE]


def run_stage(run: FlowRun, stage: Stage, logger) -> None:
    """One row: skip it or run it, time it, check its result's type, and note what it says
    about the run (a resumed candidate, a failed gate)."""
    why = stage.skip(run)
    if why:
        logger.info("%s: skipped (%s)", stage.name, why)
        return
    started = time.perf_counter()
    result = stage.run(run)
    run.timed(stage.name, started)
    if not isinstance(result, stage.returns):
        raise TypeError(f"stage {stage.name} returned {type(result).__name__}, its row says {stage.returns.__name__}")
    run.results[stage.name] = result
    if getattr(result, "resumed", False):
        logger.info(
            "%s: candidate v%s was registered by an interrupted run with these inputs; gated now, not trained again",
            stage.name,
            result.version,
        )
    gate = getattr(result, "gate", None)
    if gate is not None and gate.passed is False:
        run.state = "failed gate"


def _has_champion(name: str) -> bool:
    return alias_version(name, CHAMPION) is not None


def registry_latest(name: str) -> str | None:
    latest = registry.latest_version(name)
    return str(latest.version) if latest else None
