"""The Prefect `retrain` flow on the tiny profile: a real Prefect test server, a real Dask
LocalCluster for the GAN zoo, the default process-pool runner for the whole flow, its cache,
and one MLflow parent run tagged with the flow run id."""

import math
import os

import pytest
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from gandefect.orchestrate import retrain, task_runner_for
from tests.conftest import make_image_folder, run_cli


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=300):
        yield


def test_gan_zoo_part_of_the_flow_runs_on_a_dask_local_cluster(project, monkeypatch):
    monkeypatch.chdir(project)
    flow = retrain.with_options(task_runner=task_runner_for("dask"))
    result = flow(str(project / "params.yaml"), None, ["ingest", "gans"])
    assert result.state == "completed" and result.data_version.endswith(".dir")
    assert set(result.zoo) == {"minimax", "nonsaturating", "lsgan", "wgan", "wgan-gp", "hinge",
                               "vae", "mlpgan", "resizegan"}  # the six DCGANs and the other families
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    parent = client.search_runs([client.get_experiment_by_name("gandefect-retrain").experiment_id])[0]
    flow_run_id = parent.data.tags["flow_run_id"]
    gans = client.search_runs([client.get_experiment_by_name("gandefect-gans").experiment_id],
                              filter_string="tags.mlflow.runName LIKE 'gan-%'")
    assert len(gans) == 9 and {r.data.tags["flow_run_id"] for r in gans} == {flow_run_id}
    assert parent.data.tags["data_version"] == result.data_version
    for loss in result.zoo:
        assert client.get_registered_model(f"gandefect-generator-{loss}")
    assert any(p.name.startswith("retrain-") for p in (project / "reports").iterdir())
    assert os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    assert (project / "reports" / "gan-zoo.csv").read_text().count("\n") == 10  # one report, all nine generators


def _versions(client) -> dict[str, int]:
    return {m.name: len(client.search_model_versions(f"name = '{m.name}'")) for m in client.search_registered_models()}


def test_whole_flow_reruns_from_cache_and_a_new_generator_retrains_the_detectors(project, monkeypatch, tmp_path):
    from gandefect.config import load_config
    from gandefect.stages.detectors import run_ingest_fakes

    monkeypatch.chdir(project)
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    params = str(project / "params.yaml")
    # the default process pool: GAN workers are spawned processes that must report to this flow's server
    flow = retrain.with_options(task_runner=task_runner_for(None))
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")

    first = flow(params, None)
    assert first.state == "completed" and first.cached == []
    for name, part in (("gandefect-detector", first.detector), ("gandefect-repairer", first.repairer)):
        assert part["gate_passed"] is True
        assert client.get_model_version_by_alias(name, "champion").version == part["version"]
    assert first.bento["reused"] is False and set(first.bento["models"]) == {"detector", "repairer"}
    assert (tmp_path / "bentoml" / "bentos" / "gandefect").is_dir()
    page = next((project / "reports").glob("retrain-*.html")).read_text()
    assert "data:image/png;base64," in page and "Gate table" in page and "repairer v1" in page.lower()
    registered = _versions(client)

    second = flow(params, None)  # nothing changed: every training stage comes from the cache
    assert set(second.cached) == {"zoo-setup", "detectors", "repairer", "bento"} | {f"gan-{g}" for g in first.zoo}
    assert second.bento["tag"] == first.bento["tag"]
    assert _versions(client) == registered
    assert second.detector["version"] == first.detector["version"] and second.zoo == first.zoo
    status = run_cli(project, "status", check=True).stdout
    assert "last retrain flow runs" in status and status.count("completed") >= 2 and "13 tasks" in status

    folder = make_image_folder(tmp_path / "newgan", 60, seed=3)
    run_ingest_fakes(load_config(params), str(folder), "newgan")
    third = flow(params, None)  # a new generator family: the detectors (and what follows) retrain
    assert {f"gan-{g}" for g in first.zoo} <= set(third.cached) and "detectors" not in third.cached
    assert int(third.detector["version"]) == int(first.detector["version"]) + 1
    run = client.get_run(client.get_model_version("gandefect-detector", third.detector["version"]).run_id)
    assert "newgan" in run.data.params["trained_on"].split(",")
    # incremental: the candidate CNN was fine-tuned from the champion's weights
    assert run.data.params["warm_start_from"] == str(first.detector["version"])
    rows = {(r["generator"], r["metric"]): r for r in third.detector["gate_table"]}
    # the champion was re-evaluated on the candidate's data: judged on the new generator its own run
    # never saw, and on every old one, beside what its run recorded
    assert math.isfinite(rows[("newgan", "auc_gen")]["champion_value"])
    assert math.isnan(rows[("newgan", "auc_gen")]["champion_recorded"])
    for gen in first.zoo:
        assert math.isfinite(rows[(gen, "auc_gen")]["champion_value"])
        assert math.isfinite(rows[(gen, "auc_gen")]["champion_recorded"])
    old = client.get_run(client.get_model_version("gandefect-detector", first.detector["version"]).run_id).data.metrics
    assert rows[("all", "auc_seen")]["champion_recorded"] == pytest.approx(old["auc_seen"])
    # the candidate that learned the new generator is promoted, and a new bento serves it
    assert third.detector["gate_passed"] is True, third.detector["gate_reasons"]
    assert client.get_model_version_by_alias("gandefect-detector", "champion").version == third.detector["version"]
    assert third.state == "completed" and third.bento["tag"] != first.bento["tag"]
    report = next((project / "reports").glob("retrain-*.md")).read_text()
    assert "champion (today's data)" in report and "champion (at promotion)" in report

    # the champion per generator on the current data, new family included
    status = run_cli(project, "status", check=True).stdout
    assert f"champion v{third.detector['version']} per generator" in status and "newgan" in status
    watched = run_cli(project, "watch")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "catches every generator" in watched.stdout


def test_schedule_registers_a_cron_deployment_without_blocking(project):
    from prefect.client.orchestration import get_client

    from gandefect.errors import BadInputError
    from gandefect.orchestrate import register_schedule

    deployment_id = register_schedule(str(project / "params.yaml"), "tiny", "0 3 * * 0", "weekly-test")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
        assert deployment.name == "weekly-test"
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * 0"]
        assert deployment.parameters["profile"] == "tiny"
        assert client.read_flow(deployment.flow_id).name == "retrain"
    with pytest.raises(BadInputError, match="not a valid cron"):
        register_schedule(str(project / "params.yaml"), "tiny", "every sunday", "bad")


def test_the_default_runner_is_a_process_pool_sized_to_the_machine():
    from prefect.task_runners import ProcessPoolTaskRunner

    runner = task_runner_for(None)
    assert isinstance(runner, ProcessPoolTaskRunner)
    assert runner._max_workers == max(1, (os.cpu_count() or 1) // 2)
    with pytest.raises(Exception, match="threads, dask or dask=ADDRESS"):
        task_runner_for("ray")
