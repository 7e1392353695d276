"""The `retrain` Prefect flow: the rows of `STAGE_TABLE` in order, each stage a task, with the
GAN zoo submitted concurrently through the flow's task runner (processes, threads, or Dask).
Each row names the stage, what it reads, its cache key and the typed result it returns
(`gandefect.flow_results`); docs/architecture.md ("A flow stage") says how to add one.

Tasks call the stage functions of gandefect.stages (no second implementation). One parent
MLflow run in `gandefect-retrain` per flow run; every stage run carries the same
`flow_run_id` tag. `flows/retrain.py` is the entry point Prefect deployments name.

Incremental runs: every training task is cached by Prefect under a key made of exactly what
determines its output (data version, its params section, the seed, the upstream models and
the identity of the MLflow store), its record under `.gandefect/cache/` and its result under
`.gandefect/results/` (inside the project, so PREFECT_HOME never decides what is reused). A
rerun with unchanged data and params therefore trains and registers nothing; `force=True`
(`gandefect run --force`) refreshes every cache entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

# The ephemeral Prefect server starts slowly on small machines; give it time (overridable).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import mlflow
from mlflow.entities import Metric
from prefect import flow, get_run_logger, serve, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import CachePolicy
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.filesystems import LocalFileSystem
from prefect.runtime import flow_run, task_run
from prefect.states import Failed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

import gandefect
from gandefect import hardware
from gandefect.config import Config, load_config
from gandefect.data.fakes import external_digest
from gandefect.errors import BadInputError, ConfigError, DataValidationError
from gandefect.flow_results import DetectorsResult, GateVerdict, RepairerResult
from gandefect.lifecycle import bento, champion_record, registry, tracking
from gandefect.lifecycle.bento import BuiltBento
from gandefect.lifecycle.gates import CHAMPION, alias_version
from gandefect.lifecycle.lock import project_lock
from gandefect.lifecycle.zoo import registered_generators, zoo_members
from gandefect.names import DETECTOR_MODEL, JUDGE_MODEL, RETRAIN_EXPERIMENT
from gandefect.report import RetrainResult, write_retrain_reports
from gandefect.stages.detectors import run_train_detectors, run_watch
from gandefect.stages.gans import finish_zoo, longest_first, member_settings, prepare_zoo, train_zoo_member
from gandefect.stages.ingest import run_ingest
from gandefect.stages.repair import run_train_repairer

CACHE_DIR = ".gandefect/cache"
RESULTS_DIR = ".gandefect/results"


def _flow_run_id() -> str | None:
    return str(flow_run.id) if flow_run.id else None


# Records written under an earlier layout name results this code cannot read (layout 2 moved
# results from Prefect's home into the project; layout 3 made them typed records), so they never match.
CACHE_LAYOUT = 3


def digest(*parts) -> str:
    """A stable hash of JSON-able parts: the cache key of a stage."""
    blob = json.dumps([CACHE_LAYOUT, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def store_identity(cfg: Config) -> str:
    """The MLflow store the cached stages registered into: its URI and when its retrain
    experiment was created. A wiped or different store gives new keys, so nothing cached
    ever points at models that are not there."""
    exp = mlflow.get_experiment(tracking.experiment_id(cfg, RETRAIN_EXPERIMENT))
    return f"{tracking.tracking_uri(cfg)}@{exp.creation_time}"


def _progress(every: float = 0.1):
    """A stage progress callback that logs through Prefect at every 10 % (long tasks stay visible)."""
    logger = get_run_logger()
    last: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        step = max(1, int(total * every))
        if done == total or done // step != last.get(stage, -1):
            last[stage] = done // step
            logger.info("%s: %d/%d", stage, done, total)

    return progress


def _results_storage(cfg: Config) -> str:
    """A Prefect block, saved on the server, that stores this project's task results in
    `.gandefect/results/`; its reference (worker processes load it by name)."""
    basepath = str(cfg.path(RESULTS_DIR).resolve())
    name = f"gandefect-results-{hashlib.sha256(basepath.encode()).hexdigest()[:16]}"
    LocalFileSystem(basepath=basepath).save(name, overwrite=True)
    return f"local-file-system/{name}"


def _set_threads(cfg: Config, threads: int | None) -> None:
    """The worker's torch threads (its share of the cores) and the device options."""
    hardware.setup(cfg.device, cfg.deterministic, threads or cfg.threads)


# -- tasks ---------------------------------------------------------------------------------
def _transient(task, task_run, state) -> bool:
    """Retry a failure that may pass (a tool, the disk), not a user's mistake: bad input or
    data that failed its suite fail the same way again."""
    return not isinstance(getattr(state, "data", None), (BadInputError, ConfigError, DataValidationError))


@task(name="ingest", retries=1, retry_delay_seconds=5, retry_condition_fn=_transient)
def ingest_task(cfg: Config, sources: list[str] | None = None, replace: bool = False) -> str:
    """Ingest exactly the configured or named sources + DVC version + the data gate (a failing
    suite, or a snapshot holding other sources than those, raises and stops the flow)."""
    return run_ingest(cfg, sources, replace, flow_run_id=_flow_run_id(), exact=True).data_version


def _setup_key(_, p) -> str:
    cfg: Config = p["cfg"]
    g = cfg.gan
    return digest(
        "zoo-setup",
        gandefect.__version__,
        p["store"],
        p["data_version"],
        cfg.seed,
        cfg.data.model_dump(),
        cfg.features.model_dump(),
        [g.z_dim, g.g_width, g.d_width, g.eval_samples],
    )


@task(name="zoo-setup", cache_policy=CachePolicy.from_cache_key_fn(_setup_key), persist_result=True)
def zoo_setup_task(cfg: Config, data_version: str, store: str):
    """The feature net (registered once per data version) and the untrained generator's metrics."""
    return prepare_zoo(cfg, _progress())


def _gan_key(_, p) -> str:
    cfg: Config = p["cfg"]
    gan = cfg.gan.model_dump(exclude={"losses", "families", "generator_steps", "generator_steps_by_loss"})
    return digest(
        "gan",
        gandefect.__version__,
        p["store"],
        p["setup"].data_version,
        p["loss"],
        cfg.seed,
        cfg.data.model_dump(),
        cfg.features.model_dump(),
        gan,
        cfg.gan.steps_for(p["loss"]),
        member_settings(p["loss"]),
        cfg.precision,
    )


@task(
    name="train-gan",
    retries=1,
    retry_delay_seconds=5,
    cache_policy=CachePolicy.from_cache_key_fn(_gan_key),
    persist_result=True,
)
def train_gan_task(
    cfg: Config, loss: str, setup, store: str, parent_run_id: str | None, flow_run_id: str | None, threads: int | None
) -> dict:
    """One GAN of the zoo. A retry resumes from the attempt's checkpoints; a first attempt
    always starts fresh, so a changed input never continues an old model."""
    _set_threads(cfg, threads)
    resume = (task_run.run_count or 1) > 1
    return train_zoo_member(cfg, loss, setup, resume, parent_run_id, flow_run_id, _progress())


def _detectors_key(_, p) -> str:
    cfg: Config = p["cfg"]
    return digest(
        "detectors",
        gandefect.__version__,
        p["store"],
        p["data_version"],
        cfg.seed,
        cfg.data.model_dump(),
        cfg.detect.model_dump(),
        cfg.spliced.model_dump(),
        cfg.gates.model_dump(exclude={"repairer"}),
        p["generators"],
        p["external_fakes"],
        cfg.precision,
    )


@task(name="detectors", cache_policy=CachePolicy.from_cache_key_fn(_detectors_key), persist_result=True)
def detectors_task(
    cfg: Config, data_version: str, generators: dict, external_fakes: str, store: str, resume: bool = True
) -> DetectorsResult:
    """Fake sets + spliced benchmark, both detector families, registry, model gate, promotion.
    `resume`: gate a candidate an interrupted run registered with these inputs (not with --force)."""
    s = run_train_detectors(
        cfg,
        flow_run_id=_flow_run_id(),
        progress=_progress(),
        stage_key=_detectors_key(None, task_run.parameters),
        resume=resume,
    )
    return DetectorsResult(
        version=s.detector_version,
        winner=s.winner,
        metrics=s.results[s.winner].metrics,
        gate=GateVerdict.of(s.gate),
        judge=s.judge_version,
        fakes_version=s.fakes_version,
        spliced_version=s.spliced_version,
        report=str(s.report),
        resumed=s.resumed,
    )


def _repairer_key(_, p) -> str:
    cfg: Config = p["cfg"]
    return digest(
        "repairer",
        gandefect.__version__,
        p["store"],
        p["data_version"],
        cfg.seed,
        cfg.data.model_dump(),
        cfg.repair.model_dump(),
        cfg.spliced.model_dump(),
        cfg.gates.repairer.model_dump(),
        cfg.gates.auto_promote,
        p["generators"],
        p["detectors"],
    )


@task(name="repairer", cache_policy=CachePolicy.from_cache_key_fn(_repairer_key), persist_result=True)
def repairer_task(
    cfg: Config, data_version: str, generators: dict, detectors: dict, store: str, resume: bool = True
) -> RepairerResult:
    """Train, register, evaluate and gate the repairer (evaluated with the served detector).
    `resume`: gate a version an interrupted run registered with these inputs (not with --force)."""
    s = run_train_repairer(
        cfg,
        flow_run_id=_flow_run_id(),
        progress=_progress(),
        stage_key=_repairer_key(None, task_run.parameters),
        resume=resume,
    )
    return RepairerResult(
        version=s.version,
        metrics=s.evaluation.metrics if s.evaluation else {},
        gate=GateVerdict.of(s.gate),
        report=str(s.evaluation.report) if s.evaluation else None,
        resumed=s.resumed,
    )


@task(name="bento", retries=1, retry_delay_seconds=5)
def bento_task(cfg: Config) -> BuiltBento:
    """Package the champions as a bento; one built from the same champions and code is reused."""
    built = bento.build(cfg)
    get_run_logger().info("bento %s (%s)", built.tag, "reused" if built.reused else "built")
    return built


# -- the flow ------------------------------------------------------------------------------
# Two GANs side by side on one torch thread each train 1.3-1.5x the images per second of one
# GAN on two threads (bench/train_throughput.py --side-by-side, 2 cores; a small model's ops
# are too short for two threads to split well), so the default runner gives every GAN worker
# process this many cores (two workers on a 2-core machine, eight on an 8-core one) and the
# zoo is submitted longest first, so the longest GAN never starts last.
THREADS_PER_GAN = 1


def task_runner_for(spec: str | None):
    """`processes` (the default: one worker process per THREADS_PER_GAN cores), `processes=N`
    (N workers sharing the cores; 1 trains the GANs one at a time), `threads`, `dask` (a real
    LocalCluster) or `dask=ADDRESS` (an existing scheduler).

    Processes, even a single one on a 2-core machine: torch ops in a pool thread of the flow
    process ran about 25 % slower than in a process of their own (measured), and a GAN
    task's threads slower still while the flow's own thread was busy."""
    workers = max(1, (os.cpu_count() or 1) // THREADS_PER_GAN)
    if not spec or spec == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    if spec.startswith("processes="):
        count = spec.partition("=")[2]
        if not count.isdigit() or int(count) < 1:
            raise BadInputError(f"--task-runner processes=N needs a whole number of workers >= 1, got {count!r}")
        return ProcessPoolTaskRunner(max_workers=int(count))
    if spec == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if spec == "dask" or spec.startswith("dask="):
        from prefect_dask import DaskTaskRunner  # lazy: Dask is imported only when asked for

        address = spec.partition("=")[2]
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": max(2, workers), "threads_per_worker": 1, "processes": True},
        )
    raise BadInputError(f"--task-runner must be processes, processes=N, threads, dask or dask=ADDRESS, got {spec!r}")


def _worker_threads(runner) -> int | None:
    """Torch threads per concurrent GAN: the cores shared among the runner's local workers."""
    cores = os.cpu_count() or 1
    if isinstance(runner, ProcessPoolTaskRunner):
        return max(1, cores // (runner._max_workers or 1))
    if type(runner).__name__ == "DaskTaskRunner":
        return 1 if not getattr(runner, "address", None) else None  # a remote cluster sizes itself
    return None


@contextlib.contextmanager
def _shared_api_url():
    """Worker processes must report to this flow's Prefect server. With the ephemeral server
    (no PREFECT_API_URL) each spawned worker would otherwise start a server of its own."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    with get_client(sync_client=True) as client:
        os.environ["PREFECT_API_URL"] = str(client.api_url)
    try:
        yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


# -- the stage table -----------------------------------------------------------------------
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
        loss: gan_task.submit(cfg, loss, setup, run.store, run.parent_run_id, _flow_run_id(), run.threads)
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
    Stage("gans", _gans, ("ingest",), _gan_key, dict),
    Stage(
        "detectors", _detectors, ("ingest", "registered generators", "external fakes"), _detectors_key, DetectorsResult
    ),
    Stage(
        "repairer",
        _repairer,
        ("ingest", "registered generators", "detectors"),
        _repairer_key,
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
            "%s: v%s was registered by an interrupted run with these inputs; gated now, not trained again",
            stage.name,
            result.version,
        )
    gate = getattr(result, "gate", None)
    if gate is not None and gate.passed is False:
        run.state = "failed gate"


@flow(name="retrain", log_prints=True)
def retrain(
    params: str = "params.yaml",
    profile: str | None = None,
    stages: list[str] | None = None,
    force: bool = False,
    wait: bool = False,
    sources: list[str] | None = None,
    replace: bool = False,
) -> RetrainResult:
    """The rows of STAGE_TABLE in order: ingest -> data gate -> GAN zoo (concurrent) -> fakes +
    spliced -> detectors -> model gate -> promote -> repairer -> its gate -> the bento of the
    champions. `stages` limits the run (ingest always runs); `force` retrains every stage even
    when its inputs are unchanged. The whole run holds the project lock
    (gandefect.lifecycle.lock): a run started meanwhile stops with a message naming this one, or
    with `wait` queues behind it. `sources`: what ingest reads (else `data.source`, else the
    snapshot's own sources; see `stages.ingest.sources_to_ingest`); `replace` starts the snapshot over."""
    logger = get_run_logger()
    cfg = load_config(Path(params), profile)
    wanted = stages or STAGES
    tracking.setup(cfg)
    cache_dir = cfg.path(CACHE_DIR).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (
        project_lock(cfg.path("."), "run", wait, on_wait=logger.info),
        _shared_api_url(),
        tracking.start_run(cfg, RETRAIN_EXPERIMENT, "retrain", "pending", _flow_run_id()) as parent,
    ):
        mlflow.log_params({"stages": ",".join(wanted), "force": force})
        run = FlowRun(
            cfg,
            store_identity(cfg),
            force,
            parent.info.run_id,
            _worker_threads(FlowRunContext.get().task_runner),
            cache_dir,
            _results_storage(cfg),
            sources,
            replace,
        )
        for stage in STAGE_TABLE:
            if stage.name == "ingest" or stage.name in wanted:
                run_stage(run, stage, logger)
        # each timestamped at its stage's end: with its seconds, the stage's wall-clock window
        mlflow.MlflowClient().log_batch(
            parent.info.run_id,
            metrics=[Metric(f"seconds_{k}", v, int(run.ended[k] * 1000), 0) for k, v in run.seconds.items()],
        )
        mlflow.set_tags({"state": run.state, "cached": ",".join(run.cached) or "none"})
        r = run.results
        result = RetrainResult(
            run.data_version,
            r.get("gans", {}),
            r.get("detectors"),
            r.get("repairer"),
            r.get("bento"),
            run.seconds,
            run.state,
            run.cached,
        )
        result.reports = write_retrain_reports(cfg, result, _flow_run_id())
        tracking.log_artifacts(result.reports, "report")
        create_markdown_artifact(
            result.reports[0].read_text(), key="retrain-summary", description=f"retrain {parent.info.run_id}"
        )
    for name, part in (("detector", result.detector), ("repairer", result.repairer)):
        if part is not None and part.gate.passed is False:
            logger.warning("%s failed gate: %s", name, "; ".join(part.gate.reasons))
    return result


def _has_champion(name: str) -> bool:
    return alias_version(name, CHAMPION) is not None


def registry_latest(name: str) -> str | None:
    latest = registry.latest_version(name)
    return str(latest.version) if latest else None


DEPLOYMENT_NAME = "weekly"


@flow(name="watch", log_prints=True)
def watch(params: str = "params.yaml", profile: str | None = None, retrain_deployment: str | None = None):
    """Re-evaluate the champion detector on the current data. A markdown artifact
    (`champion-watch`) holds its figure per generator; the run ends Failed (so a Prefect
    automation can notify) when the champion misses a generator: below the gate floor.

    `retrain_deployment` (as `gandefect schedule --watch-cron` serves it): when a generator the
    champion misses has samples it never trained on (a family `ingest-fakes` brought), a run of
    the retrain deployment `retrain/<name>` starts at once, and the watch run names it."""
    logger = get_run_logger()
    cfg = load_config(Path(params), profile)
    figures, alerts = run_watch(cfg)
    started = ""
    learn = champion_record.to_learn(figures, cfg.gates) if alerts and retrain_deployment else []
    refused = _refused_on_this_data(figures) if learn else None
    if refused is not None:  # the same data trains the same model: a person decides, or more samples come
        started = (
            f"candidate v{refused.version} already learned from this data (fakes {figures.fakes_version}) "
            f"and is not the champion (refused by its gate, or rolled back); none started: `gandefect promote "
            f"{refused.version}` is an operator's call, more samples a reason to retrain"
        )
    elif learn:
        deployment = f"retrain/{retrain_deployment}"
        under_way = _runs_under_way(deployment)
        if under_way:  # a watch every few minutes must not queue a retrain behind each other
            run = under_way[0]
            started = f"retrain flow run {run.name} ({run.id}) is already under way ({run.state_name}); none started"
        else:
            run = run_deployment(deployment, timeout=0, parameters={"params": params, "profile": profile})
            started = f"retrain flow run {run.name} ({run.id}) started to learn {', '.join(learn)}"
    table = champion_record.per_generator(figures.metrics, cfg.gates)
    lines = [
        f"# champion {figures.name} v{figures.version} on the current data",
        "",
        f"Data `{figures.data_version}`, fakes `{figures.fakes_version}`, {figures.when}.",
        "",
    ]
    lines += [f"- **ALERT** {a}" for a in alerts] + ([f"- {started}"] if started else []) + ([""] if alerts else [])
    create_markdown_artifact(
        "\n".join(lines) + table.to_markdown(index=False, floatfmt=".4f") + "\n",
        key="champion-watch",
        description=f"{figures.name} v{figures.version}",
    )
    for a in alerts:
        logger.warning(a)
    if started:
        logger.warning(started)
    if alerts:
        return Failed(
            message=f"the champion misses {len(alerts)} generator(s): "
            + "; ".join(alerts)
            + (f"; {started}" if started else "")
        )
    return {"version": figures.version, "alerts": alerts}


def _refused_on_this_data(figures: champion_record.ChampionFigures):
    """The newest detector version when it is newer than the champion and was trained on the
    data and fake sets the champion was just judged on (so the gate refused it), else None."""
    newest = registry.latest_version(DETECTOR_MODEL)
    if newest is None or int(newest.version) <= int(figures.version):
        return None
    same = (newest.tags.get("data_version"), newest.tags.get("fakes_version")) == (
        figures.data_version,
        figures.fakes_version,
    )
    return newest if same else None


STALE_RUN = timedelta(hours=12)  # a run due longer ago and still not ended lost its process (the server never heard)


def _runs_under_way(deployment: str) -> list:
    """The deployment's runs that are due, pending or running now (not its future scheduled ones,
    nor ones due more than STALE_RUN ago)."""
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        due = FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[dep.id]),
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING])
            ),
            expected_start_time=FlowRunFilterExpectedStartTime(
                before_=datetime.now(UTC), after_=datetime.now(UTC) - STALE_RUN
            ),
        )
        return client.read_flow_runs(flow_run_filter=due, limit=5)


def register_schedule(params: str, profile: str | None, cron: str, name: str = DEPLOYMENT_NAME) -> str:
    """Create (or update) the deployment `retrain/<name>` with a cron schedule; returns its id.

    Needs a Prefect server that outlives this process (PREFECT_API_URL); the runs it schedules
    are executed by `gandefect schedule` (which serves the deployment) or by a worker."""
    check_cron(cron)
    deployment = retrain.to_deployment(name=name, cron=cron, parameters={"params": params, "profile": profile})
    return str(deployment.apply())


def check_cron(cron: str) -> None:
    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise BadInputError(f'--cron {cron!r} is not a valid cron expression (e.g. "0 3 * * 0")') from None


def serve_schedule(
    params: str, profile: str | None, cron: str, name: str = DEPLOYMENT_NAME, watch_cron: str | None = None
) -> None:
    """Serve the deployment: a long-running process that runs the flow on its schedule (and,
    with `watch_cron`, the `watch` flow on its own, which starts a retrain at once when the
    champion misses a generator it has never trained on)."""
    check_cron(cron)
    parameters = {"params": params, "profile": profile}
    deployments = [retrain.to_deployment(name=name, cron=cron, parameters=parameters)]
    if watch_cron:
        check_cron(watch_cron)
        deployments.append(
            watch.to_deployment(name=name, cron=watch_cron, parameters={**parameters, "retrain_deployment": name})
        )
    serve(*deployments)
