"""The Prefect `retrain` flow on the tiny profile: a real Prefect test server, the default
process-pool runner, a real Dask LocalCluster, its cache, and one MLflow parent run tagged with the
flow run id.

The session's trained project (tests/integration/conftest.py) is these tests' first two flow runs:
ingest + the zoo alone, then the whole flow (the zoo from the cache). The reruns borrow it."""

import contextlib
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from gandefect.orchestrate import retrain, task_runner_for
from tests.conftest import borrowed, make_image_folder, run_cli, write_params
from tests.integration.conftest import FAMILIES, LOSSES


@pytest.mark.slow
def test_the_gan_zoo_part_of_the_flow_runs_alone_in_worker_processes(trained):
    project, result = trained.root, trained.zoo
    assert result.state == "completed" and result.data_version.endswith(".dir")
    assert set(result.zoo) == set(LOSSES + FAMILIES)  # the six DCGANs and the other families
    # only the stages asked for
    assert result.detector is None and result.repairer is None and result.bento is None
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("gandefect-retrain").experiment_id], "params.stages = 'ingest,gans'"
    )
    flow_run_id = parent.data.tags["flow_run_id"]
    gans = client.search_runs(
        [client.get_experiment_by_name("gandefect-gans").experiment_id],
        filter_string="tags.mlflow.runName LIKE 'gan-%'",
    )
    assert len(gans) == len(LOSSES + FAMILIES) and {r.data.tags["flow_run_id"] for r in gans} == {flow_run_id}
    assert parent.data.tags["data_version"] == result.data_version
    for loss in result.zoo:
        assert client.get_registered_model(f"gandefect-generator-{loss}")
    for run in gans:  # every member, the diffusion ones too, has its FID and its sample grid
        assert "fid" in run.data.metrics and "samples/final.png" in {
            a.path for a in client.list_artifacts(run.info.run_id, "samples")
        }, run.data.tags["mlflow.runName"]
    assert [Path(p).name for p in result.reports] and all(Path(p).is_file() for p in result.reports)
    assert all(Path(p).name.startswith("retrain-") for p in result.reports)
    assert (project / "reports" / "gan-zoo.csv").read_text().count("\n") == 1 + len(
        LOSSES + FAMILIES
    )  # one report, every generator


@pytest.mark.slow  # two fresh interpreters importing the whole stack
def test_the_ephemeral_prefect_server_gets_three_minutes_to_start_unless_the_user_set_it():
    """gandefect sets Prefect's startup timeout before Prefect reads its settings (imported as
    `gandefect run` imports them: the CLI, then the flows); a value the user set wins."""
    code = (
        "import gandefect.cli, gandefect.orchestrate; "
        "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s; print(s.value())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    cases = {None: "180", "42": "42"}
    procs = {
        user: subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env if user is None else {**env, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": user},
        )
        for user in cases
    }  # both at once: each is one core's worth of imports
    for user, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert stdout.split()[-1] == cases[user], (user, stdout)


def _set_params(project: Path, **settings) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for key, value in settings.items():
        params[key] = {**params.get(key, {}), **value} if isinstance(value, dict) else value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _versions(client) -> dict[str, int]:
    return {m.name: len(client.search_model_versions(f"name = '{m.name}'")) for m in client.search_registered_models()}


@pytest.mark.slow
def test_whole_flow_reruns_from_cache_and_a_new_generator_retrains_the_detectors(trained, tmp_path, prefect_server):
    project, first = trained.root, trained.flow
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    # the session's whole flow after its ingest + zoo run: the zoo came from the cache, the rest was trained
    assert first.state == "completed" and set(first.cached) == {"zoo-setup"} | {f"gan-{g}" for g in first.zoo}
    # what the cache reuses lives in the project, not in Prefect's home (PREFECT_HOME may change)
    assert len(list((project / ".gandefect" / "results").iterdir())) >= len(first.zoo) + 2
    for name, part in (("gandefect-detector", first.detector), ("gandefect-repairer", first.repairer)):
        assert part.gate.passed is True
        assert client.get_model_version_by_alias(name, "champion").version == part.version
    assert first.bento.reused is False and set(first.bento.models) == {"detector", "repairer"}
    assert (Path(os.environ["BENTOML_HOME"]) / "bentos" / "gandefect").is_dir()  # the session's store
    html = [Path(p) for p in first.reports if str(p).endswith(".html")]
    page = html[0].read_text()
    assert "data:image/png;base64," in page and "Gate table" in page and "repairer v1" in page.lower()
    registered = _versions(client)
    # each stage's seconds are timestamped at its end, so its wall-clock window can be lined up with
    # what the machine did meanwhile (bench/train_throughput.py --flow): the windows follow one another
    (whole,) = client.search_runs(
        [client.get_experiment_by_name("gandefect-retrain").experiment_id], "params.stages != 'ingest,gans'"
    )
    ends = {
        k: client.get_metric_history(whole.info.run_id, k)[-1].timestamp
        for k in whole.data.metrics
        if k.startswith("seconds_")
    }
    assert sorted(ends, key=ends.get) == [
        f"seconds_{s}" for s in ("ingest", "zoo-setup", "gans", "detectors", "repairer", "bento")
    ]
    assert whole.info.start_time <= ends["seconds_ingest"] - 1000 * whole.data.metrics["seconds_ingest"] + 50
    assert ends["seconds_bento"] <= whole.info.end_time

    # rerun where it was trained: the flow's cache keys name the store's absolute path
    with borrowed(project), pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        _reruns(project, first, registered, client, tmp_path)


def _reruns(project, first, registered, client, tmp_path):
    from gandefect.config import load_config
    from gandefect.stages.detectors import run_ingest_fakes

    params = str(project / "params.yaml")

    # nothing changed: every training stage comes from the cache, on a Dask LocalCluster this time
    # (the zoo's tasks are submitted to its workers, which find them cached)
    second = retrain.with_options(task_runner=task_runner_for("dask"))(params, None)
    assert second.state == "completed"
    assert set(second.cached) == {"zoo-setup", "detectors", "repairer", "bento"} | {f"gan-{g}" for g in first.zoo}
    assert second.bento.tag == first.bento.tag
    assert _versions(client) == registered
    assert second.detector.version == first.detector.version and second.zoo == first.zoo
    status = run_cli(project, "status", check=True).stdout
    assert (
        "last retrain flow runs" in status
        and status.count("completed") >= 2
        and f"{len(LOSSES + FAMILIES) + 4} tasks" in status
    )

    folder = make_image_folder(tmp_path / "newgan", 60, seed=3)
    run_ingest_fakes(load_config(params), str(folder), "newgan")
    # a new generator family: the detectors (and what follows) retrain, from the zoo as registered,
    # this time in forced bf16 autocast (emulated where the CPU lacks it): the other numeric path
    # (the session's project computes in float32) through the same flow, on every machine
    # (and the gate's margin opened: a tiny model is not judged on quality, which varies by CPU)
    _set_params(project, precision="bf16", gates={"margin": 1.0})
    third = retrain.with_options(task_runner=task_runner_for("threads"))(
        params, None, ["detectors", "repairer", "bento"]
    )
    assert "detectors" not in third.cached and third.zoo == {}
    assert int(third.detector.version) == int(first.detector.version) + 1
    run = client.get_run(client.get_model_version("gandefect-detector", third.detector.version).run_id)
    first_run = client.get_run(client.get_model_version("gandefect-detector", first.detector.version).run_id)
    assert (first_run.data.params["bf16"], run.data.params["bf16"]) == ("False", "True")
    assert "newgan" in run.data.params["trained_on"].split(",")
    # incremental: the candidate CNN was fine-tuned from the champion's weights
    assert run.data.params["warm_start_from"] == str(first.detector.version)
    rows = {(r["generator"], r["metric"]): r for r in third.detector.gate.table}
    # the champion was re-evaluated on the candidate's data: judged on the new generator its own run
    # never saw, and on every old one, beside what its run recorded
    assert math.isfinite(rows[("newgan", "auc_gen")]["champion_value"])
    assert math.isnan(rows[("newgan", "auc_gen")]["champion_recorded"])
    for gen in first.zoo:  # every generator has its row; a figure its samples cannot support says why
        row = rows[(gen, "auc_gen")]
        if math.isnan(row["champion_value"]):  # a zoo member that collapsed to a few distinct samples
            assert row["missing"].startswith("candidate: ") and f"test samples of {gen}" in row["missing"], row
        else:
            assert math.isfinite(row["champion_recorded"]) and not row["missing"]
    old = client.get_run(client.get_model_version("gandefect-detector", first.detector.version).run_id).data.metrics
    assert rows[("all", "auc_seen")]["champion_recorded"] == pytest.approx(old["auc_seen"])
    # the candidate that learned the new generator is promoted, and a new bento serves it
    assert third.detector.gate.passed is True, third.detector.gate.reasons
    assert client.get_model_version_by_alias("gandefect-detector", "champion").version == third.detector.version
    assert third.state == "completed" and third.bento.tag != first.bento.tag
    report = next(Path(p) for p in third.reports if str(p).endswith(".md")).read_text()
    assert "champion (today's data)" in report and "champion (at promotion)" in report

    # the champion per generator on the current data, new family included
    status = run_cli(project, "status", check=True).stdout
    assert f"champion v{third.detector.version} per generator" in status and "newgan" in status
    watched = run_cli(project, "watch")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "catches every generator" in watched.stdout


@pytest.mark.slow
def test_schedule_registers_a_cron_deployment_without_blocking(tmp_path, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from gandefect.errors import BadInputError
    from gandefect.orchestrate.keep_up import _runs_under_way, register_schedule

    params = write_params(tmp_path)
    deployment_id = register_schedule(str(params), "tiny", "0 3 * * 0", "weekly-test")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
        assert deployment.name == "weekly-test"
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * 0"]
        assert deployment.parameters["profile"] == "tiny"
        assert client.read_flow(deployment.flow_id).name == "retrain"
    # what `watch` asks before it starts a retrain: the weekly runs still to come do not count,
    # a run started now does until it ends (no worker serves this one, so it stays due)
    assert _runs_under_way("retrain/weekly-test") == []
    started = run_deployment("retrain/weekly-test", timeout=0)
    assert [r.id for r in _runs_under_way("retrain/weekly-test")] == [started.id]
    with pytest.raises(BadInputError, match="not a valid cron"):
        register_schedule(str(params), "tiny", "every sunday", "bad")


def test_the_default_runner_is_a_process_pool_sized_to_the_machine():
    from prefect.task_runners import ProcessPoolTaskRunner

    runner = task_runner_for(None)
    assert isinstance(runner, ProcessPoolTaskRunner)
    assert runner._max_workers == max(1, os.cpu_count() or 1)  # one GAN per core, one thread each
    assert task_runner_for("processes=1")._max_workers == 1
    with pytest.raises(Exception, match="threads, dask or dask=ADDRESS"):
        task_runner_for("ray")
    with pytest.raises(Exception, match="whole number of workers"):
        task_runner_for("processes=0")


@pytest.mark.slow
def test_a_family_of_fifty_near_real_images_is_learned_by_the_next_run(trained, tmp_path):
    """Few-shot keep-up through the real commands: 50 real train digits carrying a faint
    transposed-convolution checkerboard (real content, a generation trace the tiny champion has
    not learnt on real digits) are ingested; the next run's candidate calls the family's held-out
    samples fake more often than the champion did on the same data, at each one's served
    threshold, and ranks them higher. The fine-tune is given the epochs and rate the new data
    needs: a width-8 net fine-tuned for its one tiny epoch at the default rate ranks the family
    higher (AUC 0.76 -> 0.96) but calls none of it fake; six epochs at 2e-3 call all of it fake.
    (Commands, not the flow in this process: a project put back by `borrowed` is a new database
    file, which this process's MLflow engine would no longer write.)"""
    from gandefect.config import load_config
    from gandefect.data.snapshot import read_manifest

    project = trained.root
    with borrowed(project):
        cfg = load_config(project / "params.yaml")
        real = read_manifest(cfg.real_dir)
        paths = real.loc[real["split"] == "train", "path"].tolist()[:50]
        checker = (np.indices(cfg.data.shape[:2]).sum(0) % 2) * 2 - 1
        folder = tmp_path / "fewshot"
        folder.mkdir()
        for i, rel in enumerate(paths):
            digit = np.asarray(Image.open(cfg.real_dir / rel).convert("L"), np.float64)
            Image.fromarray(np.clip(digit + 10 * checker, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
        run_cli(project, "ingest-fakes", str(folder), "--generator", "fewshot", check=True)
        _set_params(project, gates={"margin": 1.0})  # a tiny model is not judged on quality
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["profiles"]["tiny"]["detect"]["cnn"].update(finetune_epochs=6, finetune_lr=2e-3)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        done = run_cli(project, "run", "--stage", "detectors")
        assert done.returncode in (0, 4), done.stdout + done.stderr  # 4: refused, but registered and judged
        # the candidate's own run, and the champion as the gate judged it on the candidate's data
        with contextlib.closing(sqlite3.connect(project / "mlflow.db")) as db:
            (run_id,) = db.execute(
                "SELECT run_id FROM model_versions WHERE name = 'gandefect-detector' "
                "ORDER BY CAST(version AS INTEGER) DESC LIMIT 1"
            ).fetchone()
            candidate = dict(db.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,)))
            params = dict(db.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))
            (artifacts,) = db.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        champion = json.loads((Path(artifacts.removeprefix("file://")) / "champion_today.json").read_text())["metrics"]
    assert "fewshot" in params["trained_on"].split(",") and candidate["n_test_fewshot"] >= 1
    figures = {
        k: (candidate[k], champion[k]) for k in ("auc_gen_fewshot", "tpr_fake_png_fewshot", "tpr_fake_wild_fewshot")
    }
    assert candidate["tpr_fake_png_fewshot"] > champion["tpr_fake_png_fewshot"], figures
    assert candidate["auc_gen_fewshot"] > champion["auc_gen_fewshot"], figures
