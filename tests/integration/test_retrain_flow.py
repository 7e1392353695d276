"""The Prefect `retrain` flow on the tiny profile: a real Prefect test server, a real Dask
LocalCluster for the GAN zoo, and one MLflow parent run tagged with the flow run id."""

import os

import pytest
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from gandefect.orchestrate import retrain, task_runner_for


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=300):
        yield


def test_gan_zoo_part_of_the_flow_runs_on_a_dask_local_cluster(project, monkeypatch):
    monkeypatch.chdir(project)
    flow = retrain.with_options(task_runner=task_runner_for("dask"))
    result = flow(str(project / "params.yaml"), None, ["ingest", "gans"])
    assert result.state == "completed" and result.data_version.endswith(".dir")
    assert set(result.zoo) == {"minimax", "nonsaturating", "lsgan", "wgan", "wgan-gp", "hinge"}
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    parent = client.search_runs([client.get_experiment_by_name("gandefect-retrain").experiment_id])[0]
    flow_run_id = parent.data.tags["flow_run_id"]
    gans = client.search_runs([client.get_experiment_by_name("gandefect-gans").experiment_id],
                              filter_string="tags.mlflow.runName LIKE 'gan-%'")
    assert len(gans) == 6 and {r.data.tags["flow_run_id"] for r in gans} == {flow_run_id}
    assert parent.data.tags["data_version"] == result.data_version
    for loss in result.zoo:
        assert client.get_registered_model(f"gandefect-generator-{loss}")
    assert any(p.name.startswith("retrain-") for p in (project / "reports").iterdir())
    assert os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")


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
