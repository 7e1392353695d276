"""The retrain flow's Prefect tasks, each calling a stage function of gandefect.stages, and
the cache keys of the ones worth reusing: a hash of exactly what determines their output."""

from __future__ import annotations

import hashlib
import json

import mlflow
from prefect import get_run_logger, task
from prefect.cache_policies import CachePolicy
from prefect.filesystems import LocalFileSystem
from prefect.runtime import flow_run, task_run

import gandefect
from gandefect import hardware
from gandefect.config import Config
from gandefect.errors import BadInputError, ConfigError, DataValidationError
from gandefect.flow_results import DetectorsResult, GateVerdict, RepairerResult
from gandefect.lifecycle import bento, tracking
from gandefect.lifecycle.bento import BuiltBento
from gandefect.names import RETRAIN_EXPERIMENT
from gandefect.stages.detectors import run_train_detectors
from gandefect.stages.gans import member_settings, prepare_zoo, train_zoo_member
from gandefect.stages.ingest import run_ingest
from gandefect.stages.repair import run_train_repairer

CACHE_DIR = ".gandefect/cache"
RESULTS_DIR = ".gandefect/results"


def flow_run_id() -> str | None:
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


def results_storage(cfg: Config) -> str:
    """A Prefect block, saved on the server, that stores this project's task results in
    `.gandefect/results/`; its reference (worker processes load it by name)."""
    basepath = str(cfg.path(RESULTS_DIR).resolve())
    name = f"gandefect-results-{hashlib.sha256(basepath.encode()).hexdigest()[:16]}"
    LocalFileSystem(basepath=basepath).save(name, overwrite=True)
    return f"local-file-system/{name}"


def _set_threads(cfg: Config, threads: int | None) -> None:
    """The worker's torch threads (its share of the cores) and the device options."""
    hardware.setup(cfg.device, cfg.deterministic, threads or cfg.threads, share=bool(threads))


# -- tasks ---------------------------------------------------------------------------------
def _transient(task, task_run, state) -> bool:
    """Retry a failure that may pass (a tool, the disk), not a user's mistake: bad input or
    data that failed its suite fail the same way again."""
    return not isinstance(getattr(state, "data", None), (BadInputError, ConfigError, DataValidationError))


@task(name="ingest", retries=1, retry_delay_seconds=5, retry_condition_fn=_transient)
def ingest_task(cfg: Config, sources: list[str] | None = None, replace: bool = False) -> str:
    """Ingest exactly the configured or named sources + DVC version + the data gate (a failing
    suite, or a snapshot holding other sources than those, raises and stops the flow)."""
    return run_ingest(cfg, sources, replace, flow_run_id=flow_run_id(), exact=True).data_version


def setup_key(_, p) -> str:
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


@task(name="zoo-setup", cache_policy=CachePolicy.from_cache_key_fn(setup_key), persist_result=True)
def zoo_setup_task(cfg: Config, data_version: str, store: str):
    """The feature net (registered once per data version) and the untrained generator's metrics."""
    return prepare_zoo(cfg, _progress())


def gan_key(_, p) -> str:
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
    cache_policy=CachePolicy.from_cache_key_fn(gan_key),
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


def detectors_key(_, p) -> str:
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


@task(name="detectors", cache_policy=CachePolicy.from_cache_key_fn(detectors_key), persist_result=True)
def detectors_task(
    cfg: Config, data_version: str, generators: dict, external_fakes: str, store: str, resume: bool = True
) -> DetectorsResult:
    """Fake sets + spliced benchmark, both detector families, registry, model gate, promotion.
    `resume`: gate a candidate an interrupted run registered with these inputs (not with --force)."""
    s = run_train_detectors(
        cfg,
        flow_run_id=flow_run_id(),
        progress=_progress(),
        stage_key=detectors_key(None, task_run.parameters),
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


def repairer_key(_, p) -> str:
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


@task(name="repairer", cache_policy=CachePolicy.from_cache_key_fn(repairer_key), persist_result=True)
def repairer_task(
    cfg: Config, data_version: str, generators: dict, detectors: dict, store: str, resume: bool = True
) -> RepairerResult:
    """Train, register, evaluate and gate the repairer (evaluated with the served detector).
    `resume`: gate a version an interrupted run registered with these inputs (not with --force)."""
    s = run_train_repairer(
        cfg,
        flow_run_id=flow_run_id(),
        progress=_progress(),
        stage_key=repairer_key(None, task_run.parameters),
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
